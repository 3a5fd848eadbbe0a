"""Usage errors that need a database to be seen: a queue, a table or a column that is not
there is exit 2 (docs/cli.md: bad usage or configuration) with one line saying what is there,
from every command alike."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.support import stores
from tests.support.fetch import fetch_value
from tests.support.process import WorkerProcess, run_cli, wait_for

Conn = psycopg.Connection[Any]


def test_run_once_on_a_queue_no_watch_made_names_the_queues(conn: Conn, dsn: str) -> None:
    """It leased from pgmq.q_nosuchq: a traceback, then `worker stopped by an internal
    error: DatabaseError('relation "pgmq.q_nosuchq" does not exist...')`."""
    result = run_cli("run", "--once", "--queue", "nosuchq", "--no-progress", "--database-url", dsn)

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert "EMBED_QUEUE=nosuchq (run --queue): no queue nosuchq; the queues are" in result.stderr
    assert "embedding_jobs" in result.stderr and "queue => 'nosuchq'" in result.stderr
    assert "embedding_jobs_backfill" not in result.stderr  # a lane is no queue to serve

    stores.texts_table(conn, {}, table="docs")  # nothing to embed: the run drains no job
    stores.watch_with(conn, model="all-MiniLM-L6-v2", queue="nosuchq")
    served = run_cli("run", "--once", "--queue", "nosuchq", "--no-progress", "--database-url", dsn)
    assert served.returncode == 0 and "no queue" not in served.stderr, served.stderr


def test_run_on_a_queue_no_watch_made_says_so_and_waits_for_it(
    conn: Conn, dsn: str, minilm: str
) -> None:
    """A waiting `run` (not --once) is started before the watch() that makes its queue, as
    before `migrate` (docs/cli.md, --queue): it names the queues there are, is not ready, and
    serves the queue once a watch() made it; a stop while it waits is exit 0."""
    worker = WorkerProcess(dsn, {"EMBED_MODEL": minilm}, "--queue", "nosuchq")
    try:
        said = "EMBED_QUEUE=nosuchq (run --queue): no queue nosuchq; the queues are embedding_jobs"
        wait_for(lambda: said in worker.log_text(), timeout=60, what="the missing queue named")
        assert worker.proc.poll() is None, worker.log_text()
        assert worker.get("/readyz")[0] == 503

        stores.texts_table(conn, {1: "a row for the queue made later"}, table="docs")
        stores.watch_with(conn, model=minilm, queue="nosuchq")
        embedded = "SELECT embedding IS NOT NULL FROM docs WHERE id = 1"
        wait_for(lambda: fetch_value(conn, embedded), timeout=90, what="the row embedded")
        worker.signal()
        assert worker.wait_exit(30) == 0
        assert "Traceback" not in worker.log_text()
    finally:
        worker.stop()


def test_a_table_not_there_or_not_watched_is_a_usage_error_from_every_command(
    conn: Conn, dsn: str
) -> None:
    """search exited 1 where status, failures and plan exit 2 for the same name (it raised
    TargetError, they ConfigError); POST /search still answers these 404."""
    stores.texts_table(conn, {}, table="docs")
    stores.watch_with(conn, model="all-MiniLM-L6-v2")
    conn.execute("CREATE TABLE plain (id int PRIMARY KEY, body text)")
    for table in ("nosuch", "plain"):
        for argv in (
            ["status", table],
            ["failures", table],
            ["plan", table],
            ["search", table, "x"],
        ):
            result = run_cli(*argv, "--database-url", dsn)
            assert result.returncode == 2, (argv, result.stderr)
            assert f"{table}" in result.stderr and "Traceback" not in result.stderr

    column = run_cli("search", "docs", "x", "--column", "nosuch", "--database-url", dsn)
    assert column.returncode == 2, column.stderr
    assert "not watched with embedding column 'nosuch': its embedding column is" in column.stderr
