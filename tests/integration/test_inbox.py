"""The inbox (sql/22_inbox.sql): the triggers write one row per statement, no job message;
moving turns rows into job messages exactly once, whoever moves and however many at a time."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from tests.support.fetch import fetch_row, fetch_value
from tests.support.in_flight import in_process_worker, run_until, run_within, waiting_for_work
from tests.support.jobs import clear_queue, messages, move_inbox, queued_keys
from worker.config import Settings
from worker.models.loaded import LoadedModels
from worker.pipeline import faults
from worker.pipeline.messages import message_keys

Conn = psycopg.Connection[Any]


def watched(conn: Conn, table: str = "docs") -> int:
    conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, body text)")
    row = fetch_row(conn, "SELECT embeddings.watch(%s, 'body')", (table,))
    clear_queue(conn)
    return int(row[0])


def queue_rows(conn: Conn) -> int:
    return int(fetch_value(conn, "SELECT count(*) FROM pgmq.q_embedding_jobs"))


def inbox_rows(conn: Conn) -> int:
    return int(fetch_value(conn, "SELECT count(*) FROM embeddings.inbox"))


def test_a_statement_writes_one_inbox_row_and_no_job_message(conn: Conn) -> None:
    target = watched(conn)
    conn.execute("INSERT INTO docs VALUES (1, 'one')")
    conn.execute("INSERT INTO docs SELECT g, 'row' FROM generate_series(2, 1000) g")
    assert (queue_rows(conn), inbox_rows(conn)) == (0, 2)
    assert queued_keys(conn, target) == list(range(1, 1001))


def test_a_rolled_back_statement_leaves_nothing_in_the_inbox(conn: Conn) -> None:
    watched(conn)
    with conn.transaction(force_rollback=True):
        conn.execute("INSERT INTO docs VALUES (1, 'one')")
        assert inbox_rows(conn) == 1
    assert inbox_rows(conn) == 0


def test_moving_coalesces_single_row_statements_in_write_order_and_once_per_key(
    conn: Conn,
) -> None:
    target = watched(conn)
    for i in range(1, 301):
        conn.execute("INSERT INTO docs VALUES (%s, 'row')", (i,))
    conn.execute("UPDATE docs SET body = 'edited' WHERE id IN (5, 6)")  # 5 and 6 again
    first = conn.execute("SELECT min(enqueued_at) FROM embeddings.inbox").fetchone()
    assert move_inbox(conn) == 3
    assert inbox_rows(conn) == 0
    sent = messages(conn)
    assert [len(message_keys(m)) for m in sent] == [128, 128, 44]
    assert queued_keys(conn, target) == list(range(1, 301))
    # The job keeps the time of the oldest write it carries: latency and age stay honest.
    oldest = conn.execute("SELECT min(enqueued_at) FROM pgmq.q_embedding_jobs").fetchone()
    assert oldest == first


def test_composite_and_text_keys_are_moved_as_keys(conn: Conn) -> None:
    conn.execute("CREATE TABLE t (tenant int, slug text, body text, PRIMARY KEY (tenant, slug))")
    row = fetch_row(conn, "SELECT embeddings.watch('t', 'body')")
    clear_queue(conn)
    conn.execute("""INSERT INTO t VALUES (1, 'a"b', 'x'), (2, 'c,d', 'y')""")
    before = queued_keys(conn, row[0])
    move_inbox(conn)
    assert queued_keys(conn, row[0]) == before == [[1, 'a"b'], [2, "c,d"]]


def test_concurrent_movers_send_each_key_exactly_once(conn: Conn, dsn: str) -> None:
    target = watched(conn)
    for i in range(1, 2001):
        conn.execute("INSERT INTO docs VALUES (%s, 'row')", (i,))
    barrier = threading.Barrier(4)

    def mover() -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            barrier.wait()
            while c.execute(
                "SELECT embeddings_internal.move_inbox('embedding_jobs', 50)"
            ).fetchone() != (0,):
                pass

    threads = [threading.Thread(target=mover) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert inbox_rows(conn) == 0
    assert sorted(queued_keys(conn, target)) == list(range(1, 2001))


def test_a_mover_skips_rows_another_mover_holds(conn: Conn, dsn: str) -> None:
    target = watched(conn)
    conn.execute("INSERT INTO docs VALUES (1, 'one')")
    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT embeddings_internal.move_inbox('embedding_jobs')")  # not committed
        conn.execute("INSERT INTO docs VALUES (2, 'two')")
        assert move_inbox(conn) == 1  # does not wait for the holder
        holder.rollback()  # the holder's move never happened: its row is back in the inbox
    assert sorted(queued_keys(conn, target)) == [1, 2]
    move_inbox(conn)
    assert sorted(queued_keys(conn, target)) == [1, 2]
    assert inbox_rows(conn) == 0


def test_each_queue_moves_only_its_own_targets(conn: Conn) -> None:
    docs = watched(conn)
    conn.execute("CREATE TABLE notes (id bigint PRIMARY KEY, body text)")
    row = fetch_row(conn, "SELECT embeddings.watch('notes', 'body', queue => 'other_jobs')")
    conn.execute("INSERT INTO docs VALUES (1, 'one')")
    conn.execute("INSERT INTO notes VALUES (7, 'seven')")
    assert move_inbox(conn) == 1
    assert queue_rows(conn) == 1
    assert inbox_rows(conn) == 1  # notes' row waits for its own queue
    assert move_inbox(conn, "other_jobs") == 1
    assert queued_keys(conn, docs) == [1]
    assert queued_keys(conn, row[0], "other_jobs") == [7]


def test_status_counts_the_inbox_and_unwatch_empties_it(conn: Conn) -> None:
    watched(conn)
    conn.execute("INSERT INTO docs SELECT g, 'row' FROM generate_series(1, 5) g")
    conn.execute("INSERT INTO docs VALUES (6, 'six')")
    status = conn.execute(
        "SELECT pending_jobs, pending_live, oldest_pending_seconds IS NOT NULL"
        " FROM embeddings.status"
    ).fetchone()
    assert status == (6, 6, True)
    conn.execute("SELECT embeddings.unwatch('docs')")
    assert inbox_rows(conn) == 0


def test_sweep_and_dispatch_move_the_inbox_where_no_worker_does(conn: Conn) -> None:
    target = watched(conn)
    conn.execute("INSERT INTO docs VALUES (1, 'one')")
    conn.execute("SELECT embeddings.sweep()")
    assert (queue_rows(conn), inbox_rows(conn)) == (1, 0)
    conn.execute("INSERT INTO docs VALUES (2, 'two')")
    batches = [r[0] for r in conn.execute("SELECT embeddings.dispatch_batches()").fetchall()]
    jobs = [job for batch in batches for job in batch]
    assert sorted(k for job in jobs for k in message_keys(job)) == [1, 2]
    assert all(job["target"] == target for job in jobs)
    assert inbox_rows(conn) == 0


def test_a_big_statement_is_sliced_into_inbox_rows_and_moved_by_a_key_budget(conn: Conn) -> None:
    target = watched(conn)
    conn.execute("INSERT INTO docs SELECT g, 'row' FROM generate_series(1, 10000) g")
    rows = conn.execute("SELECT keys FROM embeddings.inbox ORDER BY keys DESC").fetchall()
    assert rows == [(4096,), (4096,), (1808,)]
    # Whole rows, until the budget is reached: 4,096 + 4,096 keys for a budget of 5,000.
    sent = conn.execute(
        "SELECT embeddings_internal.move_inbox('embedding_jobs', 100, 5000)"
    ).fetchone()
    assert sent == (64,)
    assert inbox_rows(conn) == 1
    move_inbox(conn)
    assert sorted(queued_keys(conn, target)) == list(range(1, 10001))


def test_run_once_beside_a_worker_moving_the_inbox_waits_for_the_jobs_it_moves(
    conn: Conn, dsn: str, minilm: str, settings: Settings, embedders: LoadedModels
) -> None:
    """Two `run --once` workers started together (the faults bench's two workers): the first
    to look moves the inbox into the queue, and its move holds the inbox's rows until it
    commits. The second's read skipped them and found the queue empty: it exited at once,
    drained as it saw it, and the first embedded everything alone (63 s for 5,000 rows
    against 39 s shared)."""
    five_notes(conn, minilm)
    worker = in_process_worker(settings, embedders, once=True)
    with psycopg.connect(dsn) as mover:  # the other worker, mid-move
        mover.execute("SELECT embeddings_internal.move_inbox('embedding_jobs')")
        exits = run_until(worker, lambda: waiting_for_work(conn), then=mover.commit)
    assert exits == [0]
    assert fetch_value(conn, "SELECT count(*) FROM docs WHERE embedding IS NULL") == 0


def test_run_once_reads_what_a_move_committed_while_it_looked(
    conn: Conn, dsn: str, minilm: str, settings: Settings, embedders: LoadedModels
) -> None:
    """The move another worker holds commits between our read (nothing: the move held the
    rows) and our look at the inbox (empty now: they are jobs). Looked at after the read, the
    inbox passed for drained and the worker exited, the jobs queued (CI met it once)."""
    five_notes(conn, minilm)
    worker = in_process_worker(settings, embedders, once=True)
    with psycopg.connect(dsn) as mover:  # the other worker, mid-move
        mover.execute("SELECT embeddings_internal.move_inbox('embedding_jobs')")
        with faults.injected("read_empty", mover.commit):
            assert run_within(worker, 60) == [0]
    assert fetch_value(conn, "SELECT count(*) FROM docs WHERE embedding IS NULL") == 0


def test_run_once_leaves_what_a_move_held_open_holds(
    conn: Conn,
    dsn: str,
    minilm: str,
    settings: Settings,
    embedders: LoadedModels,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A move of the inbox left open (a session that ran embeddings.sweep() in a transaction it
    did not end) holds the inbox's rows for as long as it lives: `--once` waits for them a
    bounded time, as for a backfill no one steps, then ends; they are the queue's if that
    transaction commits, the inbox's again if it rolls back. It waited for them forever."""
    five_notes(conn, minilm)
    worker = in_process_worker(settings, embedders, once=True, owner_code_timeout_seconds=0.2)
    with psycopg.connect(dsn) as mover:
        mover.execute("SELECT embeddings_internal.move_inbox('embedding_jobs')")
        assert run_within(worker, 30) == [0]
        mover.rollback()
    assert fetch_value(conn, "SELECT count(*) FROM docs WHERE embedding IS NULL") == 5
    assert inbox_rows(conn) == 1
    assert "inbox of queue embedding_jobs not moved for 1 s" in caplog.text


def five_notes(conn: Conn, model: str) -> None:
    """`docs`, watched with `model`, and 5 rows written: their keys in the inbox."""
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (model,))
    conn.execute("INSERT INTO docs SELECT g, 'note ' || g FROM generate_series(1, 5) g")
