"""A database at one of the revisions 0002-0018 that main carried before release 0.2.0
squashed them (people who followed main): `migrate` re-stamps it as 0001 and upgrades it to
0.2.0. The database is fixtures/at_0018.sql.gz (made by fixtures/make_at_0018.py at revision
0018, work in every state); nothing waiting in it may be lost, and the worker then finishes it.
A schema whose revision is not recorded at all is named, with the revision to record."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests.migration.scenarios import fixture_roles, queued_keys, restore
from tests.support.cluster import Cluster
from tests.support.schema_dump import our_objects
from worker import exceptions, schema
from worker.cli import doctor
from worker.config import Settings
from worker.models.loaded import LoadedModels
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]
ROLE = "embed_worker_fixture"  # the fixture's worker role (roles are not in a database's dump)

# What must survive the upgrade unchanged, each read the same way before and after it.
STATE = {
    "dead letters": "SELECT id, target_id, row_key, message, attempts, last_error"
    " FROM embeddings.failures ORDER BY id",
    "inbox rows": "SELECT target, keys, columns, enqueued_at FROM embeddings.inbox"
    " ORDER BY enqueued_at, target, columns::text",
    "live jobs": "SELECT msg_id, message FROM pgmq.q_embedding_jobs ORDER BY msg_id",
    "backfill lane jobs": "SELECT msg_id, message FROM pgmq.q_embedding_jobs_backfill"
    " ORDER BY msg_id",
    "chunks": "SELECT id, seq, chunk, embedding::text FROM articles_chunks ORDER BY id, seq",
    "vectors": "SELECT id, embedding::text FROM docs ORDER BY id",
    "shadow vectors": "SELECT id, embedding_next::text FROM docs"
    " WHERE embedding_next IS NOT NULL ORDER BY id",
    "backfill cursors": "SELECT target_id, every_row, after_key, scanned_rows, enqueued_keys, lane"
    " FROM embeddings.backfills ORDER BY target_id",
    "model changes": "SELECT target_id, model, shadow_column, rows_total"
    " FROM embeddings.model_changes ORDER BY target_id",
    "targets": "SELECT id, source::text, model, version, key_columns, chunk_table::text"
    " FROM embeddings.targets ORDER BY id",
    "worker roles": "SELECT role_name FROM embeddings.worker_roles",
}


def state(conn: Conn) -> dict[str, list[tuple[Any, ...]]]:
    return {what: conn.execute(query).fetchall() for what, query in STATE.items()}


@pytest.fixture
def at_0018(cluster: Cluster) -> Iterator[str]:
    with psycopg.connect(cluster.admin_dsn, autocommit=True) as admin:
        if not admin.execute("SELECT FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone():
            admin.execute(f"CREATE ROLE {ROLE} LOGIN")
    name = restore(cluster, "at_0018")
    yield cluster.dsn(name)
    cluster.drop_database(name)
    with psycopg.connect(cluster.admin_dsn, autocommit=True) as admin:
        admin.execute(f"DROP ROLE IF EXISTS {ROLE}")


def test_a_database_at_0018_upgrades_keeping_all_its_work_and_the_worker_finishes_it(
    cluster: Cluster,
    at_0018: str,
    tiny_model_paths: str,
    embedders: LoadedModels,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with psycopg.connect(at_0018, autocommit=True) as conn:
        assert schema.current_revision(conn) == "0018"
        before, keys_before = state(conn), queued_keys(conn)
    assert {k for k, rows in before.items() if not rows} == set()  # every kind of work is there

    migration = schema.migrate(at_0018)

    assert migration.restamped_from == "0018"
    assert migration.applied == ["0002", "0019", "0020"]
    assert migration.lines()[:2] == [
        "re-stamped 0018 (a revision of main before 0.2.0) as 0001",
        "applied 0002 (0.2.0)",
    ]
    with psycopg.connect(at_0018, autocommit=True) as conn:
        assert state(conn) == before
        assert queued_keys(conn) == keys_before
    fresh = cluster.create_database(prefix="fresh")
    try:
        schema.migrate(cluster.dsn(fresh))
        assert our_objects(at_0018) == our_objects(cluster.dsn(fresh))
    finally:
        cluster.drop_database(fresh)

    monkeypatch.setenv("EMBED_MODEL_PATH", tiny_model_paths)
    settings = Settings(
        database_url=make_conninfo(at_0018, user=ROLE),  # as the fixture's worker role
        model="tiny-a",
        batch_size=64,
        max_attempts=3,
        backoff_base_seconds=0.01,
        vt_seconds=30,
    )
    worker = Worker(settings, once=True, embedders=embedders, progress=False, handle_signals=False)
    assert worker.run() == 0

    with psycopg.connect(at_0018, autocommit=True) as conn:
        assert queued_keys(conn) == []
        left = conn.execute(
            "SELECT (SELECT count(*) FROM embeddings.backfills),"
            " (SELECT count(*) FROM embeddings.model_changes),"
            " (SELECT count(*) FROM docs WHERE embedding IS NULL),"
            " (SELECT count(*) FROM notes WHERE embedding IS NULL),"
            " (SELECT count(*) FROM articles a"
            "  WHERE NOT EXISTS (SELECT FROM articles_chunks c WHERE c.id = a.id)),"
            " (SELECT count(*) FROM flaky WHERE embedding IS NULL)"
        ).fetchone()
        # The change completed, the backfill ended, every row embedded but the dead letters.
        assert left == (0, 0, 0, 0, 0, 4)
        assert conn.execute(STATE["dead letters"]).fetchall() == before["dead letters"]
        # The shadow vectors written before the upgrade became the vectors (tiny-b's).
        assert conn.execute(
            "SELECT model FROM embeddings.targets WHERE source = 'docs'::regclass"
        ).fetchone() == ("tiny-b",)
        vectors: dict[int, str] = dict(
            conn.execute("SELECT id, embedding::text FROM docs").fetchall()
        )
        shadow = dict(before["shadow vectors"])
        assert {k: vectors[k] for k in shadow if k != 5} == {
            k: v for k, v in shadow.items() if k != 5
        }
        # Untouched articles kept their chunks; article 3 was chunked again from its new text.
        chunks = conn.execute(
            "SELECT id, seq, chunk, embedding::text FROM articles_chunks ORDER BY id, seq"
        ).fetchall()
        assert [c for c in chunks if c[0] != 3] == [c for c in before["chunks"] if c[0] != 3]
        assert [c[2] for c in chunks if c[0] == 3] == ["a short new text"]


def test_0002_of_main_before_the_squash_is_told_from_the_release_by_its_schema(
    cluster: Cluster,
) -> None:
    """Main's 0002 and release 0.2.0's share the id: a database stamped 0002 that still has
    0.1.0's `targets.key_column` (main's 0002 had it; its 0003 dropped it) is re-stamped and
    upgraded, one at the release's 0002 is left alone."""
    with fixture_roles(cluster):
        name = restore(cluster, "at_0001")
        dsn = cluster.dsn(name)
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(f"UPDATE public.{schema.VERSION_TABLE} SET version_num = '0002'")

            upgrade = schema.migrate(dsn)

            assert (upgrade.restamped_from, upgrade.applied) == ("0002", ["0002", "0019", "0020"])
            again = schema.migrate(dsn)
            assert (again.restamped_from, again.applied) == (None, [])
        finally:
            cluster.drop_database(name)


def test_a_schema_restored_without_its_revision_is_named_and_stamped_as_said(
    cluster: Cluster, dsn: str
) -> None:
    """A 0.3.0 database whose Alembic table is gone (only schema `embeddings` restored): migrate
    took it for an empty one and failed on `column t.store_table does not exist`. It names the
    table, the release the schema's tables are of, and the SQL that records it; nothing is
    changed; run as said, the upgrade goes through. Today's schema without it is installed over."""
    with fixture_roles(cluster):
        name = restore(cluster, "at_0019")
        try:
            with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
                conn.execute(f"DROP TABLE public.{schema.VERSION_TABLE}")
            with pytest.raises(exceptions.EmbedWorkerError) as refused:
                schema.migrate(cluster.dsn(name))
            message = str(refused.value)
            assert f"public.{schema.VERSION_TABLE}" in message and "revision 0019" in message
            with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
                assert schema.current_revision(conn) is None
                assert conn.execute("SELECT to_regnamespace('embeddings_internal')").fetchone() == (
                    None,
                )
                for statement in message.splitlines()[1:3]:
                    conn.execute(statement.strip())
            assert schema.migrate(cluster.dsn(name)).applied == ["0020"]
        finally:
            cluster.drop_database(name)

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE public.{schema.VERSION_TABLE}")
    assert schema.migrate(dsn).applied[-1] == schema.head_revision()


def test_doctor_gives_the_statements_migrate_refuses_with(cluster: Cluster) -> None:
    """QA 5b nit 7: on that database doctor said "run migrate", which then refused; it gives
    the refusal's statements itself, from the same text."""
    with fixture_roles(cluster):
        name = restore(cluster, "at_0019")
        try:
            with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
                conn.execute(f"DROP TABLE public.{schema.VERSION_TABLE}")
            with pytest.raises(exceptions.EmbedWorkerError) as refused:
                schema.migrate(cluster.dsn(name))

            found = doctor.check(cluster.dsn(name), Settings(database_url=cluster.dsn(name)))

            (said,) = [f for f in found if f.check == "schema"]
            assert said.level == "FAIL"
            assert f"{said.detail}. {said.fix}\nNothing was changed" == str(refused.value)
        finally:
            cluster.drop_database(name)
