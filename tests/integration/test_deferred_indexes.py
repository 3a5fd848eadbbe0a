"""Deferred HNSW indexes: watch() builds none on a large table (its backfill's vectors would be
inserted one by one, ten times their share of a build); a worker whose role owns the table builds
it CONCURRENTLY once the backfill ended (worker/process/index_builder.py, sql/62_backfill.sql).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.conftest import Running
from tests.support import stores
from tests.support.deferred_indexes import (
    build_waits,
    deferred_count,
    deferred_index_name,
    deferred_table,
    hnsw_indexes,
)
from tests.support.fetch import fetch_value
from tests.support.jobs import clear_queue
from tests.support.process import wait_for
from tests.support.stores import watch_with
from worker.process import index_builder
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]
DOCS = Path(__file__).resolve().parents[2] / "docs"


def index_deferred(conn: Conn, target: int) -> bool | None:
    row = conn.execute(
        "SELECT index_deferred FROM embeddings.status WHERE target_id = %s", (target,)
    ).fetchone()
    assert row is not None
    deferred: bool | None = row[0]
    return deferred


def test_a_large_table_gets_its_index_after_the_backfill(
    conn: Conn, run_once: Callable[..., Worker], tiny_models: tuple[str, str]
) -> None:
    target = deferred_table(conn, "docs", tiny_models[0])
    # No index built under watch()'s lock: deferred, and status says so.
    assert hnsw_indexes(conn, "docs") == []
    assert index_deferred(conn, target) is True
    run_once(model=tiny_models[0])
    assert conn.execute("SELECT count(*) FROM docs WHERE embedding IS NULL").fetchone() == (0,)
    # named with its target's id: two targets' cannot collide (test_generated_names.py)
    assert hnsw_indexes(conn, "docs") == [(f"docs_embedding_{target}_hnsw", True)]
    assert index_deferred(conn, target) is False


def test_the_deferred_index_lookup_counts_the_jobs_of_deferred_targets_alone(
    conn: Conn, tiny_models: tuple[str, str]
) -> None:
    """The fetcher asks for deferred indexes at every backfill read. It counted every target's
    pending jobs (0.8 ms each) before joining the targets with a deferred index: 0.8 s a batch
    beside 1,000 watched tables, none of them deferred."""
    for table in ("a", "b", "c"):
        conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, body text)")
        watch_with(conn, table, model=tiny_models[0])
    conn.execute("SET track_functions = 'all'")
    with conn.transaction():
        ready = "SELECT count(*) FROM embeddings.deferred_index_ready('embedding_jobs')"
        assert conn.execute(ready).fetchone() == (0,)
        calls = conn.execute(
            "SELECT calls FROM pg_stat_xact_user_functions"
            " WHERE schemaname = 'embeddings_internal' AND funcname = 'pending_count'"
        ).fetchone()
    assert calls is None  # never called


def test_a_deferred_index_waits_for_old_transactions_past_the_database_s_timeouts(
    conn: Conn,
    dsn: str,
    running: Callable[..., Running],
    tiny_models: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A CONCURRENTLY build waits for every transaction older than it, and building a million
    rows' index takes minutes: the database's statement_timeout and lock_timeout (common as
    `ALTER DATABASE ... SET`) cancelled it at each try, leaving it invalid, for as long as the
    application ran transactions that long. The build has neither, and does not give way to
    another table's index for this wait, which any build would wait for too."""
    monkeypatch.setattr(index_builder, "TABLE_WAIT_SECONDS", 0.5)
    monkeypatch.setattr(index_builder, "OLDER_SAY_SECONDS", 1.0)
    deferred_table(conn, "docs", tiny_models[0])
    deferred_table(conn, "other", tiny_models[0])
    for setting in ("statement_timeout", "lock_timeout"):
        conn.execute(f'ALTER DATABASE "{conn.info.dbname}" SET {setting} = 500')
    with psycopg.connect(dsn) as report:  # the application's long transaction, a snapshot held
        report.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        report.execute("SELECT count(*) FROM docs")
        running(model=tiny_models[0], poll_seconds=0.2)
        building = (
            "SELECT count(*) FROM pg_stat_activity WHERE query ~* 'CREATE INDEX CONCURRENTLY'"
            " AND query ~* 'ON public\\.docs ' AND state = 'active'"
            " AND query_start < now() - interval '3 s'"
        )
        wait_for(
            lambda: conn.execute(building).fetchone() == (1,),
            timeout=30,
            what="the build to wait for the application's transaction past both timeouts",
        )
        # and says which session it waits for (only that session can end the wait)
        said = f"waited {{}} s for transactions older than it (pids {report.info.backend_pid})"
        wait_for(
            lambda: any(said.format(n) in caplog.text for n in range(1, 60)),
            timeout=30,
            what="the build to say what it waits for",
        )
        report.commit()
    wait_for(
        lambda: deferred_count(conn) == 0,
        timeout=30,
        what="both indexes built",
    )
    assert hnsw_indexes(conn, "docs") == [(deferred_index_name(conn, "docs"), True)]


def test_a_large_partitioned_table_gets_its_index_partition_by_partition(
    conn: Conn, run_once: Callable[..., Worker], tiny_models: tuple[str, str]
) -> None:
    rows = conn.execute("SELECT embeddings.index_defer_rows()").fetchone()
    assert rows is not None
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text) PARTITION BY RANGE (id)")
    conn.execute("CREATE TABLE docs_a PARTITION OF docs FOR VALUES FROM (1) TO (100000)")
    conn.execute("CREATE TABLE docs_b PARTITION OF docs FOR VALUES FROM (100000) TO (10000000)")
    conn.execute(
        "INSERT INTO docs SELECT i, 'doc ' || i FROM generate_series(1, %s) i", (rows[0] + 1000,)
    )
    conn.execute("ANALYZE docs")
    target = watch_with(conn, "docs", model=tiny_models[0])
    # Under watch()'s lock only the parent's index, invalid (no partition was scanned).
    assert hnsw_indexes(conn, "docs") == [(deferred_index_name(conn, "docs"), False)]
    assert hnsw_indexes(conn, "docs_a") == hnsw_indexes(conn, "docs_b") == []
    # A partition created meanwhile gets its index from the parent's.
    conn.execute("CREATE TABLE docs_c PARTITION OF docs FOR VALUES FROM (10000000) TO (20000000)")
    assert len(hnsw_indexes(conn, "docs_c")) == 1
    assert index_deferred(conn, target) is True
    conn.execute("DELETE FROM docs WHERE id > 300 AND id < 100000 OR id > 100300")  # short drain
    run_once(model=tiny_models[0])
    assert conn.execute("SELECT count(*) FROM docs WHERE embedding IS NULL").fetchone() == (0,)
    assert hnsw_indexes(conn, "docs") == [(deferred_index_name(conn, "docs"), True)]
    assert [valid for _, valid in hnsw_indexes(conn, "docs_a") + hnsw_indexes(conn, "docs_b")] == [
        True,
        True,
    ]
    assert conn.execute("SELECT count(*) FROM embeddings.deferred_indexes").fetchone() == (0,)


def test_a_small_or_partitioned_table_is_indexed_at_watch(
    conn: Conn, tiny_models: tuple[str, str]
) -> None:
    stores.texts_table(conn, {i: f"doc {i}" for i in range(1, 11)})
    watch_with(conn, "docs", model=tiny_models[0])
    assert len(hnsw_indexes(conn, "docs")) == 1
    assert conn.execute("SELECT count(*) FROM embeddings.deferred_indexes").fetchone() == (0,)


# What a table's own users can hold that a CONCURRENTLY build of its index waits for, for as long
# as they hold it: the build's own lock (a VACUUM, an ANALYZE, another index's build, LOCK TABLE),
# and the transactions writing the table (an import left open).
HOLDS = {
    "the table in SHARE UPDATE EXCLUSIVE mode": "LOCK TABLE held IN SHARE UPDATE EXCLUSIVE MODE",
    "a write to the table not yet committed": "INSERT INTO held VALUES (1000000, 'not yet')",
}


@pytest.mark.parametrize("hold", HOLDS)
def test_a_table_its_users_hold_keeps_only_its_own_index_waiting(
    conn: Conn,
    dsn: str,
    running: Callable[..., Running],
    tiny_models: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    hold: str,
) -> None:
    """A worker builds one deferred index at a time, and a build waits for what its table's users
    hold. While one tenant's table was held, every other table's index waited (their searches
    scanning exactly). Now the held build gives way after TABLE_WAIT_SECONDS when another
    table's index is ready, and is tried again after it."""
    monkeypatch.setattr(index_builder, "TABLE_WAIT_SECONDS", 1.0)
    deferred_table(conn, "held", tiny_models[0])
    with psycopg.connect(dsn) as holder:  # a transaction, open while the test runs
        holder.execute(HOLDS[hold])
        running(model=tiny_models[0], poll_seconds=0.2)
        wait_for(
            lambda: build_waits(conn, "held"), timeout=30, what="the held table's build to wait"
        )
        deferred_table(conn, "other", tiny_models[0])  # ready while the first build waits
        wait_for(
            lambda: hnsw_indexes(conn, "other") == [(deferred_index_name(conn, "other"), True)],
            timeout=60,
            what="the other table's index while the first is held",
        )
        assert not any(valid for _, valid in hnsw_indexes(conn, "held"))
        holder.rollback()
    wait_for(
        lambda: deferred_count(conn) == 0,
        timeout=60,
        what="the held table's index once it was let go",
    )
    assert hnsw_indexes(conn, "held") == [(deferred_index_name(conn, "held"), True)]


def test_a_worker_stopped_while_it_builds_an_index_leaves_no_build_running(
    conn: Conn, dsn: str, running: Callable[..., Running], tiny_models: tuple[str, str]
) -> None:
    """The build runs in a thread of its own that nothing joined: a worker stopped while it
    built left that thread and its session behind in a process that went on (an application
    running the worker, the tests: it logged into a closed stream), and in the database the
    build went on without it. Now the stop cancels the build and waits for its thread."""
    deferred_table(conn, "held", tiny_models[0])
    with psycopg.connect(dsn) as holder:  # the build waits for it
        holder.execute(HOLDS["the table in SHARE UPDATE EXCLUSIVE mode"])
        worker = running(model=tiny_models[0], poll_seconds=0.2)
        wait_for(
            lambda: build_waits(conn, "held"), timeout=30, what="the held table's build to wait"
        )
        worker.stop()
        assert not [t for t in threading.enumerate() if t.name == "index-builder"]
        assert not build_waits(conn, "held")
        holder.rollback()
    assert not any(valid for _, valid in hnsw_indexes(conn, "held"))


def test_an_index_another_session_is_building_is_not_offered(
    conn: Conn, dsn: str, tiny_models: tuple[str, str]
) -> None:
    """Two workers of a queue: while one built an index, the other found it invalid and was
    offered its cleanup (DROP INDEX CONCURRENTLY), which waited for the build and dropped the
    index it had made, then built it again."""
    deferred_table(conn, "docs", tiny_models[0], kept_rows=0)
    clear_queue(conn)  # (as if a worker had done them)
    conn.execute("SELECT embeddings_internal.backfill_next('embedding_jobs', 1000)")  # (its end)
    ready = "SELECT count(*) FROM embeddings.deferred_index_ready('embedding_jobs')"
    assert fetch_value(conn, ready) == 1
    statement = fetch_value(
        conn, "SELECT statements FROM embeddings.deferred_index_ready('embedding_jobs')"
    )[0]  # (then the check that it built it)
    with psycopg.connect(dsn, autocommit=True) as builder, psycopg.connect(dsn) as writer:
        writer.execute("INSERT INTO docs VALUES (1, 'not yet')")  # the build waits for it
        thread = threading.Thread(target=lambda: builder.execute(statement), daemon=True)
        thread.start()
        wait_for(lambda: build_waits(conn, "docs"), timeout=30, what="the build to wait")
        assert hnsw_indexes(conn, "docs") == [(deferred_index_name(conn, "docs"), False)]
        assert fetch_value(conn, ready) == 0
        writer.rollback()
    thread.join(30)
    assert hnsw_indexes(conn, "docs") == [(deferred_index_name(conn, "docs"), True)]


@pytest.mark.parametrize("page", ["scaling.md", "sql.md"])
def test_the_documented_build_by_hand_drops_a_broken_build_and_builds_the_index(
    conn: Conn, dsn: str, tiny_models: tuple[str, str], page: str
) -> None:
    """The SQL the docs give a table's owner, as written, in psql: docs/scaling.md's read a
    column deferred_index_ready() does not return (`statement`), and docs/sql.md's left out
    `cleanup`, so CREATE INDEX ... IF NOT EXISTS took an interrupted build's invalid index for
    the index and built nothing."""
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("psql not installed")
    (sql,) = [
        block
        for block in re.findall(r"```sql\n(.*?)```", (DOCS / page).read_text(), re.S)
        if "FROM embeddings.deferred_index_ready" in block
    ]
    target = deferred_table(conn, "docs", tiny_models[0], kept_rows=0)
    clear_queue(conn)  # (as if a worker had done them)
    conn.execute("SELECT embeddings_internal.backfill_next('embedding_jobs', 1000)")  # (its end)
    # What an interrupted CONCURRENTLY build of 0.3.0 leaves: an invalid index of its name.
    conn.execute(
        "CREATE INDEX docs_embedding_hnsw ON docs USING hnsw (embedding halfvec_cosine_ops)"
    )
    conn.execute(
        "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'docs_embedding_hnsw'::regclass"
    )
    assert hnsw_indexes(conn, "docs") == [("docs_embedding_hnsw", False)]
    result = subprocess.run(
        [psql, "-X", "-v", "ON_ERROR_STOP=1", "-d", dsn],
        input=sql,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert hnsw_indexes(conn, "docs") == [("docs_embedding_hnsw", True)]
    assert fetch_value(conn, "SELECT embeddings_internal.deferred_index_built(%s)", (target,))
