"""`migrate` with objects of the user's inside schema embeddings (QA foreign, finding 1): the code
reinstall dropped every function, view and composite type there, the user's too, without a
word. It drops ours only (what our SQL of any release names, older releases' code included) and
keeps theirs; a function of theirs under one of our names, with arguments no release of ours
had, makes it refuse, naming it, and change nothing."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.migration.scenarios import fixture_roles, restore
from tests.support.cluster import Cluster
from worker import exceptions, schema


@pytest.fixture
def at_0_3_0(cluster: Cluster) -> Iterator[str]:
    """A database at release 0.3.0 (fixtures/at_0019.sql.gz)."""
    with fixture_roles(cluster):
        name = restore(cluster, "at_0019")
        yield cluster.dsn(name)
        cluster.drop_database(name)


def test_migrate_keeps_the_users_functions_views_and_types_in_our_schema(at_0_3_0: str) -> None:
    with psycopg.connect(at_0_3_0, autocommit=True) as conn:
        conn.execute("CREATE TYPE embeddings.my_pair AS (a int, b int)")
        conn.execute(
            "CREATE FUNCTION embeddings.my_double(x int) RETURNS int LANGUAGE sql AS 'SELECT 2 * x'"
        )
        conn.execute("CREATE VIEW embeddings.my_docs AS SELECT embeddings.my_double(21) AS two")
        conn.execute("REVOKE ALL ON FUNCTION embeddings.my_double(int) FROM PUBLIC")
        conn.execute("COMMENT ON VIEW embeddings.my_docs IS 'mine'")
        older = conn.execute(
            "SELECT count(*) FROM pg_proc WHERE proname = 'check_serving'"
        ).fetchone()
    assert older == (1,)  # 0.3.0's, which 0.4.0 no longer has

    assert schema.migrate(at_0_3_0).applied == ["0020"]

    with psycopg.connect(at_0_3_0, autocommit=True) as conn:
        assert conn.execute("SELECT two FROM embeddings.my_docs").fetchone() == (42,)
        assert conn.execute("SELECT (1, 2)::embeddings.my_pair").fetchone() == ("(1,2)",)
        assert conn.execute(
            "SELECT has_function_privilege('public', 'embeddings.my_double(int)', 'EXECUTE'),"
            " obj_description('embeddings.my_docs'::regclass, 'pg_class')"
        ).fetchone() == (False, "mine")
        left = conn.execute(
            "SELECT count(*) FROM pg_proc WHERE proname = 'check_serving'"
            " UNION ALL SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'embeddings_kept%'"
        ).fetchall()
        assert left == [(0,), (0,)]


def test_migrate_refuses_to_drop_a_users_function_named_as_ours(at_0_3_0: str) -> None:
    with psycopg.connect(at_0_3_0, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION embeddings.watch(x int) RETURNS int LANGUAGE sql AS 'SELECT x'"
        )

    with pytest.raises(exceptions.EmbedWorkerError) as refused:
        schema.migrate(at_0_3_0)

    message = str(refused.value)
    assert "  function embeddings.watch(integer)\n" in message, message
    assert "  ALTER FUNCTION embeddings.watch(integer) SET SCHEMA public;" in message
    assert "nothing was changed" in message
    with psycopg.connect(at_0_3_0, autocommit=True) as conn:
        assert schema.current_revision(conn) == "0019"
        assert conn.execute("SELECT embeddings.watch(7)").fetchone() == (7,)
