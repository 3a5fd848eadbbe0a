"""The code reinstall every release revision ends with (worker/schema/install.py: reinstall_code): over
an installed schema it changes nothing, regenerates what hangs on the code, keeps others'
grants, and refuses when an object of someone else's depends on the code."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import psycopg
import pytest

from tests.migration.scenarios import queued_keys, restore
from tests.support.cluster import Cluster
from tests.support.login_roles import login_role
from tests.support.schema_dump import pg_dump_schema
from worker import exceptions, schema
from worker.schema import code

Conn = psycopg.Connection[Any]


def reinstall(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        schema.install(conn)
        conn.commit()


def watch_every_kind(conn: Conn) -> None:
    """Targets of each kind whose generated functions and triggers differ: a content column, a
    content function, a composite key, a partitioned table, a replica, a chunked target."""
    conn.execute("CREATE TABLE plain (id bigint PRIMARY KEY, body text)")
    conn.execute("INSERT INTO plain SELECT i, 'plain ' || i FROM generate_series(1, 50) i")
    conn.execute("SELECT embeddings.watch('plain', 'body')")
    conn.execute("CREATE TABLE byfn (a int, b text, body text, PRIMARY KEY (a, b))")
    conn.execute(
        "CREATE FUNCTION byfn_text(r byfn) RETURNS text LANGUAGE sql IMMUTABLE"
        " RETURN r.b || ': ' || r.body"
    )
    conn.execute("SELECT embeddings.watch('byfn', 'byfn_text')")
    conn.execute("INSERT INTO byfn VALUES (1, 'x', 'one'), (2, 'y', 'two')")
    conn.execute("CREATE TABLE parts (id int PRIMARY KEY, body text) PARTITION BY RANGE (id)")
    conn.execute("CREATE TABLE parts_1 PARTITION OF parts FOR VALUES FROM (0) TO (100)")
    conn.execute("SELECT embeddings.watch('parts', 'body')")
    conn.execute("INSERT INTO parts VALUES (1, 'part one')")
    conn.execute("CREATE TABLE copied (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('copied', 'body', replica => true)")
    conn.execute("CREATE TABLE long_texts (id int PRIMARY KEY, body text)")
    conn.execute(
        "SELECT embeddings.watch('long_texts', 'body', chunk_tokens => 64, chunk_overlap => 8)"
    )
    conn.execute("INSERT INTO long_texts VALUES (1, 'a long text')")
    conn.execute("UPDATE plain SET body = 'changed' WHERE id = 3")


def test_a_reinstall_over_an_installed_schema_changes_nothing(dsn: str, conn: Conn) -> None:
    watch_every_kind(conn)
    before, keys = pg_dump_schema(dsn), queued_keys(conn)

    reinstall(dsn)

    assert pg_dump_schema(dsn) == before  # generated functions, triggers, event triggers too
    assert queued_keys(conn) == keys
    conn.execute("INSERT INTO plain VALUES (100, 'after the reinstall')")
    conn.execute("INSERT INTO parts VALUES (2, 'another part')")
    assert len(queued_keys(conn)) == len(keys) + 2  # the regenerated triggers enqueue


def test_a_reinstall_refuses_when_objects_of_others_depend_on_the_code(
    dsn: str, conn: Conn
) -> None:
    """A user's view over embeddings.status, a SQL function calling one of ours: dropping our
    code would take them along, so the reinstall says which and what to do, and drops nothing."""
    conn.execute("CREATE VIEW pending AS SELECT target, pending_jobs FROM embeddings.status")
    conn.execute(
        "CREATE FUNCTION lane(q text) RETURNS text LANGUAGE sql RETURN embeddings_internal.backfill_queue(q)"
    )
    before = pg_dump_schema(dsn)

    with (
        psycopg.connect(dsn) as other,
        pytest.raises(exceptions.EmbedWorkerError) as refused,
    ):
        schema.install(other)

    message = str(refused.value)
    assert "view pending" in message and "view embeddings.status" in message
    assert (
        "function lane(text)" in message and "embeddings_internal.backfill_queue(text)" in message
    )
    assert "Drop them, migrate, then create them again" in message
    assert pg_dump_schema(dsn) == before


def test_a_reinstall_removes_the_notification_triggers_of_earlier_releases(conn: Conn) -> None:
    """Releases before 0.2.0 woke workers with a NOTIFY from a trigger on each queue table;
    Postgres refuses PREPARE TRANSACTION after a NOTIFY, so the reinstall must take them away."""
    conn.execute(
        "CREATE FUNCTION embeddings.notify_workers() RETURNS trigger LANGUAGE plpgsql"
        " AS $$ BEGIN PERFORM pg_notify('embeddings_jobs', TG_ARGV[0]); RETURN NULL; END $$"
    )
    for table in ("q_embedding_jobs", "q_embedding_jobs_backfill"):
        conn.execute(
            f"CREATE TRIGGER embeddings_notify_workers AFTER INSERT ON pgmq.{table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION embeddings.notify_workers('embedding_jobs')"
        )

    schema.install(conn)

    assert conn.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgname = 'embeddings_notify_workers'"
    ).fetchone() == (0,)
    assert conn.execute("SELECT to_regproc('embeddings.notify_workers')").fetchone() == (None,)


def test_migrate_prints_one_line_per_revision_and_no_alembic_chatter(empty_dsn: str) -> None:
    def migrate() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "worker", "migrate", "--database-url", empty_dsn],
            capture_output=True,
            text=True,
            env=os.environ,
            timeout=120,
        )

    first = migrate()
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[:4] == [
        "applied 0001 (0.1.0)",
        "applied 0002 (0.2.0)",
        "applied 0019 (0.3.0)",
        "applied 0020 (0.4.0, unreleased)",
    ]
    assert all(line.startswith("notice: ") for line in lines[4:])
    assert any("pg_net skipped" in line for line in lines)  # optional extensions: still said
    assert len(lines) == len(set(lines))  # each NOTICE once, though both revisions raised it
    assert "alembic" not in first.stderr and "INFO" not in first.stderr
    assert "already exists" not in first.stdout + first.stderr

    again = migrate()
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == ["already at 0020 (0.4.0, unreleased)"]


def locks_held_by_a_reinstall(dsn: str) -> int:
    """The locks a reinstall holds at its end (rolled back: nothing changed)."""
    with psycopg.connect(dsn) as conn:
        schema.install(conn)
        row = conn.execute("SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid()").fetchone()
        conn.rollback()
    assert row is not None
    return int(row[0])


def test_a_reinstall_locks_within_what_the_lock_table_check_counts(dsn: str, conn: Conn) -> None:
    """The locks refuse_short_lock_table() counts on are the reinstall's own, measured: the code,
    and each watched table of every kind."""
    alone = locks_held_by_a_reinstall(dsn)
    watch_every_kind(conn)
    targets = conn.execute("SELECT count(*) FROM embeddings.targets").fetchone()
    assert targets is not None
    with_targets = locks_held_by_a_reinstall(dsn)
    assert alone <= code.CODE_LOCKS
    assert (with_targets - alone) / targets[0] <= code.LOCKS_PER_TARGET


def test_a_reinstall_beyond_the_lock_table_is_refused_with_the_setting_that_fits() -> None:
    """1,000 watched tables held some 29,000 locks; a default server (100 connections) has room
    for 7,000-odd, and the migration failed minutes in with 'out of shared memory'."""
    assert code.lock_shortage(100, 64, 114) is None
    refused = code.lock_shortage(1000, 64, 114)
    assert refused is not None
    assert "1,000 watched tables" in refused and "max_locks_per_transaction = 512" in refused
    assert code.lock_shortage(1000, 512, 114) is None


def test_migrate_runs_under_a_database_s_statement_timeout(cluster: Cluster) -> None:
    """A statement_timeout set for the database (for its applications: `ALTER DATABASE ... SET`)
    failed migrate with 'canceling statement due to statement timeout' in the middle of sql/'s
    files; migrate's own bounds are its lock waits (--lock-wait), so it runs without one."""
    upgraded = restore(cluster, "at_0019_every_kind")
    fresh = cluster.create_database(prefix="fresh")
    try:
        for name in (upgraded, fresh):
            with psycopg.connect(cluster.admin_dsn, autocommit=True) as admin:
                admin.execute(f'ALTER DATABASE "{name}" SET statement_timeout = 100')
        assert schema.migrate(cluster.dsn(upgraded)).applied == ["0020"]
        assert schema.migrate(cluster.dsn(fresh)).applied[-1] == "0020"
        with psycopg.connect(cluster.dsn(fresh)) as conn:  # the setting is still the database's
            assert conn.execute("SHOW statement_timeout").fetchone() == ("100ms",)
    finally:
        cluster.drop_database(upgraded)
        cluster.drop_database(fresh)


def test_migrate_as_a_worker_role_says_who_must_run_it(dsn: str, conn: Conn) -> None:
    """The systemd steps ran `migrate` with the worker's env file: it answered `permission
    denied for table embed_worker_alembic_version` alone. It says whose URL to use."""
    with login_role(conn, dsn, "worker") as worker_dsn:
        role = psycopg.conninfo.conninfo_to_dict(worker_dsn)["user"]
        conn.execute("SELECT embeddings.grant_worker(%s)", (role,))
        ran = subprocess.run(
            [sys.executable, "-m", "worker", "migrate", "--database-url", worker_dsn],
            capture_output=True,
            text=True,
            env=os.environ,
            timeout=120,
        )
    assert ran.returncode == 1, ran.stderr
    assert "permission denied" in ran.stderr and "Traceback" not in ran.stderr
    assert f"the owner of schema embeddings) or a superuser, and {role} is neither" in ran.stderr
    assert "the installer's DATABASE_URL, not the worker's" in ran.stderr
