"""`migrate` as the database's owner that is not a superuser (a managed service's installer),
on a server that preloads pg_cron, as the test cluster does (scripts/pgcluster.sh)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests.support.cluster import Cluster
from worker import schema


@pytest.fixture
def installer_dsn(cluster: Cluster) -> Iterator[str]:
    """A database owned by a role without superuser or pg_read_all_settings, with pgvector
    created by the administrator (the installer may not create it)."""
    role = f"appo_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as su:
        su.execute(f"CREATE ROLE {role} LOGIN CREATEROLE")
        name = cluster.create_database(prefix="managed")
        su.execute(f"ALTER DATABASE {name} OWNER TO {role}")
    with psycopg.connect(cluster.dsn(name), autocommit=True) as su:
        su.execute(f"ALTER SCHEMA public OWNER TO {role}")
        su.execute("CREATE EXTENSION vector")
    yield make_conninfo(cluster.dsn(name), user=role)
    cluster.drop_database(name)
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as su:
        su.execute(f"DROP OWNED BY {role}")
        su.execute(f"DROP ROLE {role}")


def test_migrate_skips_pg_cron_when_it_may_not_read_where_pg_cron_runs(
    installer_dsn: str,
) -> None:
    with psycopg.connect(installer_dsn) as conn:
        preloaded = conn.execute(
            "SELECT EXISTS (SELECT FROM pg_available_extensions WHERE name = 'pg_cron')"
        ).fetchone()
        if preloaded != (True,):
            pytest.skip("pg_cron is not on this server")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT current_setting('cron.database_name', true)")

    migration = schema.migrate(installer_dsn)

    assert migration.applied == ["0001", "0002", "0019", "0020"]
    (skipped,) = [n for n in migration.notices if n.startswith("pg_cron skipped")]
    role = psycopg.conninfo.conninfo_to_dict(installer_dsn)["user"]
    assert f"{role} may not read cron.database_name" in skipped
    assert "it needs pg_read_all_settings" in skipped
    assert "CREATE EXTENSION pg_cron" in skipped and "embeddings.schedule_sweep()" in skipped
    with psycopg.connect(installer_dsn, autocommit=True) as conn:
        cron = conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron'")
        assert cron.fetchone() == (0,)
        conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
        assert conn.execute("SELECT embeddings.watch('docs', 'body')").fetchone() == (1,)
    assert schema.migrate(installer_dsn).applied == []  # and again: nothing to do
