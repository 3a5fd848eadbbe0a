"""The real process on a backfill: a worker killed mid-backfill, and the next one resumes it.

The worker (a least-privilege role) steps the backfill of a table watched with rows in it; it
is killed (SIGKILL: no clean-up at all) while the backfill runs. A second worker finishes: every
row ends up embedded, each written exactly once (a trigger logs every committed write).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import psycopg

from tests.support.process import WorkerProcess, wait_for

Conn = psycopg.Connection[Any]
ROWS = 2500


def count(conn: Conn, query: str) -> int:
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def leased(conn: Conn) -> int:
    """Messages of every queue (lane) that a worker holds now."""
    queues = [name for (name,) in conn.execute("SELECT queue_name FROM pgmq.list_queues()")]
    return sum(
        count(conn, f"SELECT count(*) FROM pgmq.q_{name} WHERE vt > clock_timestamp()")
        for name in queues
    )


def test_a_worker_killed_mid_backfill_is_resumed_and_each_row_written_once(
    conn: Conn, start_worker: Callable[..., WorkerProcess]
) -> None:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute(
        "INSERT INTO docs SELECT g, 'short text ' || g FROM generate_series(1, %s) g", (ROWS,)
    )
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'all-MiniLM-L6-v2')")
    conn.execute("CREATE TABLE writes (id bigint)")
    conn.execute("GRANT INSERT ON writes TO PUBLIC")
    conn.execute(
        "CREATE FUNCTION log_write() RETURNS trigger LANGUAGE plpgsql AS"
        " $$BEGIN INSERT INTO writes VALUES (new.id); RETURN NULL; END$$"
    )
    conn.execute(
        "CREATE TRIGGER log_write AFTER UPDATE OF embedding ON docs FOR EACH ROW"
        " WHEN (new.embedding IS NOT NULL) EXECUTE FUNCTION log_write()"
    )
    inline = count(conn, "SELECT embeddings.backfill_step_keys()")
    # Batches of 8: the worker steps 128 rows at a time after watch()'s inline step.
    first = start_worker(http=False, EMBED_BATCH_SIZE=8, EMBED_VT_SECONDS=3)
    try:
        wait_for(
            lambda: count(conn, "SELECT count(embedding) FROM docs") > inline + 100,
            timeout=240,
            what="the worker to step the backfill",
        )
    except TimeoutError:
        raise AssertionError(first.log_text()[-3000:]) from None
    after_key = count(conn, "SELECT (after_key #>> '{}')::bigint FROM embeddings.backfills")
    assert inline < after_key < ROWS  # killed mid-backfill
    first.signal(signal.SIGKILL)
    first.wait_exit(30)
    # What the killed worker had leased comes back when its lease ends (EMBED_VT_SECONDS):
    # `--once` reads what there is to read and does not wait for other workers' leases, so on
    # a machine that embeds the rest within the lease it would exit first (128 rows left).
    wait_for(lambda: leased(conn) == 0, timeout=30, what="the killed worker's leases to end")

    second = start_worker("--once", http=False, EMBED_BATCH_SIZE=8, EMBED_VT_SECONDS=3)
    assert second.wait_exit(300) == 0
    assert count(conn, "SELECT count(*) FROM embeddings.backfills") == 0
    assert count(conn, "SELECT count(*) FROM docs WHERE embedding IS NULL") == 0
    assert count(conn, "SELECT count(*) FROM writes") == ROWS
    assert count(conn, "SELECT count(DISTINCT id) FROM writes") == ROWS
    assert count(conn, "SELECT count(*) FROM pgmq.q_embedding_jobs") == 0
