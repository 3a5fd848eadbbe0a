"""Migrations: up, down, up again; idempotent; equal to a fresh install of sql/."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.cluster import Cluster
from worker import schema


def pg_dump_schema(dsn: str) -> str:
    """The schema as pg_dump prints it, minus what legitimately differs between databases."""
    server_bin = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_dump"))
    pg_dump = str(server_bin[-1]) if server_bin else "pg_dump"
    out = subprocess.run(
        [
            pg_dump,
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            f"--exclude-table=public.{schema.VERSION_TABLE}",
            dsn,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # The \\restrict lines carry a random key per dump (pg_dump 15.14+).
    ignored = r"^(--.*|SET .*|SELECT pg_catalog\.set_config.*|\\(un)?restrict .*)$"
    return re.sub(ignored, "", out, flags=re.MULTILINE)


def objects_of_ours(conn: psycopg.Connection[Any]) -> dict[str, int]:
    row = conn.execute(
        """SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = 'embeddings'),
                  (SELECT count(*) FROM pg_trigger WHERE tgname ~ '^embeddings_[0-9]+_'),
                  (SELECT count(*) FROM pgmq.meta WHERE queue_name = 'embedding_jobs'),
                  (SELECT count(*) FROM pg_event_trigger WHERE evtname ~ '^embeddings_')"""
    ).fetchone()
    assert row is not None
    return {
        "schema": int(row[0]),
        "triggers": int(row[1]),
        "queue": int(row[2]),
        "event_triggers": int(row[3]),
    }


def test_upgrade_twice_is_a_no_op(empty_dsn: str) -> None:
    schema.migrate(empty_dsn)
    before = pg_dump_schema(empty_dsn)
    assert schema.migrate(empty_dsn) == []  # nothing ran, so nothing was skipped either
    assert pg_dump_schema(empty_dsn) == before


def test_up_down_up_keeps_user_data(empty_dsn: str) -> None:
    schema.migrate(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
        conn.execute("INSERT INTO docs VALUES (1, 'one'), (2, 'two')")
        conn.execute("SELECT embeddings.watch('docs', 'body')")
        conn.execute(
            "UPDATE docs SET embedding = array_fill(0.5, ARRAY[384])::halfvec WHERE id = 1"
        )
        assert objects_of_ours(conn) == {
            "schema": 1,
            "triggers": 3,
            "queue": 1,
            "event_triggers": 2,
        }

    schema.downgrade(empty_dsn)

    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert objects_of_ours(conn) == {
            "schema": 0,
            "triggers": 0,
            "queue": 0,
            "event_triggers": 0,
        }
        rows = conn.execute(
            "SELECT id, body, embedding IS NOT NULL FROM docs ORDER BY id"
        ).fetchall()
        assert rows == [(1, "one", True), (2, "two", False)]
        assert schema.current_revision(conn) is None
        # Writes to the formerly watched table no longer touch anything of ours.
        conn.execute("INSERT INTO docs VALUES (3, 'three')")

    schema.migrate(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert objects_of_ours(conn) == {
            "schema": 1,
            "triggers": 0,
            "queue": 1,
            "event_triggers": 2,
        }
        assert conn.execute("SELECT embeddings.watch('docs', 'body')").fetchone() == (1,)
        # The existing 384-d column is reused; rows 2 and 3 lack an embedding and are queued
        # (on the backfill lane: watch()'s initial enqueue is backfill work).
        keys = conn.execute(
            "SELECT jsonb_path_query_array(message, '$.keys[*]') FROM pgmq.q_embedding_jobs_backfill"
        ).fetchone()
        assert keys is not None and sorted(keys[0]) == [2, 3]


def test_downgrade_keeps_a_queue_that_existed_before(empty_dsn: str) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pgmq")
        conn.execute("SELECT pgmq.create('embedding_jobs')")
        conn.execute("""SELECT pgmq.send('embedding_jobs', '{"id": 1}')""")
    schema.migrate(empty_dsn)
    schema.downgrade(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pgmq.q_embedding_jobs").fetchone() == (1,)
        triggers = conn.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'pgmq.q_embedding_jobs'::regclass"
            " AND NOT tgisinternal"
        ).fetchone()
        assert triggers == (0,)


def test_migrated_schema_equals_fresh_install(cluster: Cluster) -> None:
    migrated = cluster.create_database(prefix="migrated")
    fresh = cluster.create_database(prefix="fresh")
    try:
        schema.migrate(cluster.dsn(migrated))
        with psycopg.connect(cluster.dsn(fresh)) as conn:
            schema.install(conn)
            conn.commit()
        migrated_dump = pg_dump_schema(cluster.dsn(migrated))
        assert "CREATE FUNCTION embeddings.watch" in migrated_dump
        assert migrated_dump == pg_dump_schema(cluster.dsn(fresh))
    finally:
        cluster.drop_database(migrated)
        cluster.drop_database(fresh)


def test_pgmq_installs_as_plain_sql_where_the_extension_is_unavailable(empty_dsn: str) -> None:
    """Managed servers without the pgmq extension get its SQL from the pgmq package."""
    with psycopg.connect(empty_dsn) as conn:
        # Hide the extension from this transaction only, as such a server would.
        conn.execute(
            "CREATE TEMP VIEW pg_available_extensions AS SELECT * FROM pg_catalog.pg_available_extensions WHERE name <> 'pgmq'"
        )
        conn.execute("SET search_path = pg_temp, pg_catalog, public")
        schema.ensure_pgmq(conn)
        installed = conn.execute(
            "SELECT (SELECT count(*) FROM pg_extension WHERE extname = 'pgmq'),"
            " to_regprocedure('pgmq.send(text, jsonb)') IS NOT NULL"
        ).fetchone()
        assert installed == (0, True)


def test_missing_pgvector_is_a_clear_error(empty_dsn: str) -> None:
    with psycopg.connect(empty_dsn) as conn:
        conn.execute(
            "CREATE TEMP VIEW pg_available_extensions AS SELECT * FROM pg_catalog.pg_available_extensions WHERE name <> 'vector'"
        )
        conn.execute("SET search_path = pg_temp, pg_catalog, public")
        with pytest.raises(psycopg.errors.RaiseException, match="pgvector"):
            schema.install(conn)


def test_released_revisions_are_ancestors_of_head() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(schema.migrations_dir()))
    chain = [s.revision for s in ScriptDirectory.from_config(config).walk_revisions()]
    assert len(ScriptDirectory.from_config(config).get_heads()) == 1
    assert set(schema.RELEASED_REVISIONS) <= set(chain)


def test_frozen_revisions_are_not_the_current_sql() -> None:
    """0001 applies its own copy of the 0.1.0 files, never whatever sql/ holds today."""
    frozen = schema.revision_files("0001_initial")
    assert [p.name for p in frozen][:2] == ["00_extensions.sql", "10_schema.sql"]
    assert all(p.parent.name == "0001_initial" for p in frozen)


def watch_docs(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs SELECT i, 'text ' || i FROM generate_series(1, 300) i")
    conn.execute("SELECT embeddings.watch('docs', 'body')")
    conn.execute("INSERT INTO docs VALUES (301, 'late')")


@pytest.mark.parametrize("start", schema.RELEASED_REVISIONS)
def test_upgrade_keeps_jobs_and_failures_and_equals_fresh_install(
    cluster: Cluster, start: str
) -> None:
    """A database created at an older revision, with rows, queued jobs and dead letters,
    upgraded to head: same schema as a fresh install, nothing queued or dead-lettered lost."""
    upgraded = cluster.create_database(prefix="upgraded")
    fresh = cluster.create_database(prefix="fresh")
    try:
        schema.migrate(cluster.dsn(upgraded), start)
        with psycopg.connect(cluster.dsn(upgraded), autocommit=True) as conn:
            watch_docs(conn)
            conn.execute(
                "INSERT INTO embeddings.failures (target_id, target, row_key, queue, message,"
                " attempts, last_error) SELECT id, 'public.docs.embedding', '7', 'embedding_jobs',"
                """ '{"target": 1, "keys": [7]}', 5, 'boom' FROM embeddings.targets"""
            )
            jobs_before = conn.execute(
                "SELECT msg_id, message FROM pgmq.q_embedding_jobs ORDER BY msg_id"
            ).fetchall()
        assert sum(len(m["keys"]) for _, m in jobs_before) == 301

        schema.migrate(cluster.dsn(upgraded))
        with psycopg.connect(cluster.dsn(fresh)) as conn:
            schema.install(conn)
            conn.commit()
        with psycopg.connect(cluster.dsn(fresh), autocommit=True) as conn:
            watch_docs(conn)  # the same user objects (table, index, triggers) on both sides
        assert pg_dump_schema(cluster.dsn(upgraded)) == pg_dump_schema(cluster.dsn(fresh))
        with psycopg.connect(cluster.dsn(upgraded), autocommit=True) as conn:
            jobs_after = conn.execute(
                "SELECT msg_id, message FROM pgmq.q_embedding_jobs ORDER BY msg_id"
            ).fetchall()
            failures = conn.execute(
                "SELECT row_key, last_error FROM embeddings.failures"
            ).fetchall()
        assert jobs_after == jobs_before
        assert failures == [(7, "boom")]
    finally:
        cluster.drop_database(upgraded)
        cluster.drop_database(fresh)
