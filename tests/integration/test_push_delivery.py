"""Push mode (POST /functions/v1/embed): what a delivery's answer means. SIGTERM hands back the
jobs not started; a second delivery of jobs in progress is answered busy, not processed
twice; "completed" means embedded by this request; the answer keeps the order sent."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import psycopg

from tests.integration.test_push_leases import Jobs, body, docs, pushed_to, worker
from worker.http import push
from worker.pipeline import faults
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]

__all__ = ["body", "docs", "worker"]  # the fixtures, shared with test_push_leases


def embedded(conn: Conn) -> int:
    row = conn.execute("SELECT count(embedding) FROM docs").fetchone()
    assert row is not None
    return int(row[0])


def test_stopping_finishes_the_batch_in_flight_and_hands_back_the_rest(
    conn: Conn, body: Jobs, worker: Worker
) -> None:
    stopping = threading.Event()
    pushed = dataclasses.replace(
        pushed_to(worker, worker.settings.with_overrides(batch_size=2)), stopping=stopping
    )
    before = dict(conn.execute("SELECT msg_id, read_ct FROM pgmq.q_embedding_jobs").fetchall())

    with faults.injected("embed", stopping.set):  # SIGTERM while the first batch is embedded
        result = push.process(pushed, body)

    assert [job["jobId"] for job in result.completed] == [job["jobId"] for job in body[:2]]
    assert [job["jobId"] for job in result.failed] == [job["jobId"] for job in body[2:]]
    assert all(job["error"] == push.HANDED_BACK for job in result.failed)
    assert result.handed_back == 4
    assert embedded(conn) == 2
    # Visible again now, not after dispatch()'s lease, and the delivery not counted.
    rows = conn.execute(
        "SELECT msg_id, read_ct, vt <= clock_timestamp() FROM pgmq.q_embedding_jobs"
    ).fetchall()
    assert {m: (ct, True) for m, ct, _ in rows} == {m: (before[m] - 1, v) for m, _, v in rows}
    assert worker.lanes.live.leases.held() == {}

    # Already stopping when the request comes: nothing embedded, every job handed back.
    again = [job for job in body if job["jobId"] in {m for m, _, _ in rows}]
    conn.execute("SELECT pgmq.read('embedding_jobs', 300, 10)")
    result = push.process(pushed, again)
    assert result.completed == [] and result.handed_back == len(again) == 4
    assert embedded(conn) == 2


def test_a_second_delivery_of_jobs_in_progress_is_answered_busy(
    conn: Conn, body: Jobs, worker: Worker
) -> None:
    pushed = pushed_to(worker)
    second: list[push.PushResult] = []

    def deliver_again() -> None:  # the same body, while the first request embeds it
        if not second:
            second.append(push.process(pushed, body))

    with faults.injected("embed", deliver_again):
        first = push.process(pushed, body)

    assert len(first.completed) == 6 and first.failed == []
    assert second[0].completed == []
    assert [job["error"] for job in second[0].failed] == [push.BUSY] * 6
    assert embedded(conn) == 6
    assert conn.execute("SELECT count(*) FROM pgmq.q_embedding_jobs").fetchone() == (0,)


def test_a_job_whose_rows_went_back_to_the_queue_is_not_completed(
    conn: Conn, dsn: str, body: Jobs, worker: Worker
) -> None:
    settings = worker.settings.with_overrides(lock_timeout_ms=50)
    with psycopg.connect(dsn) as locker:
        locker.execute("SELECT * FROM docs WHERE id = 3 FOR UPDATE")  # another session's lock
        result = push.process(pushed_to(worker, settings), body)
        locker.rollback()

    assert len(result.completed) == 5
    (failed,) = result.failed
    assert "held up by another session's lock" in failed["error"], failed
    assert embedded(conn) == 5
    # The row waits in a message of its own, for a later delivery.
    assert conn.execute("SELECT count(*) FROM pgmq.q_embedding_jobs").fetchone() == (1,)


def test_the_answer_keeps_the_order_the_jobs_were_sent_in(
    conn: Conn, docs: int, worker: Worker, minilm: str
) -> None:
    conn.execute("CREATE TABLE notes (id bigint PRIMARY KEY, body text)")
    conn.execute("INSERT INTO notes VALUES (1, 'a note')")
    conn.execute("SELECT embeddings.watch('notes', 'body', model => %s)", (minilm,))
    sent: Jobs = [
        job
        for (batch,) in conn.execute("SELECT * FROM embeddings.dispatch_batches(100, 1, 300)")
        for job in batch
    ]
    assert sent[-1].get("lane") == "backfill"  # live jobs first, then the backfill lane's
    sent.reverse()  # a backfill job first

    result = push.process(pushed_to(worker), sent)

    assert result.failed == []
    assert result.completed == sent


def test_dispatch_fills_a_request_by_rows_up_to_the_workers_limit(conn: Conn, minilm: str) -> None:
    """watch()'s triggers' jobs carry up to 128 keys: 10 of them (dispatch()'s default batch_size) are
    1,280 rows, more than a worker embeds for one request."""
    conn.execute("CREATE TABLE big (id bigint PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('big', 'body', model => %s)", (minilm,))
    # (two statements of at most 1,000 rows: a bulk statement's jobs go to the backfill lane)
    conn.execute("INSERT INTO big SELECT g, 'row ' || g FROM generate_series(1, 750) g")
    conn.execute("INSERT INTO big SELECT g, 'row ' || g FROM generate_series(751, 1500) g")

    def rows(request: Jobs) -> int:
        return sum(len(job["keys"]) for job in request)

    requests = [r[0] for r in conn.execute("SELECT * FROM embeddings.dispatch_batches(10, 1)")]
    assert [rows(r) for r in requests] == [push.MAX_ROWS]  # 8 jobs of 128 keys
    # The jobs no request had room for are visible again now, their read not counted.
    queue = "pgmq.q_embedding_jobs"
    left = conn.execute(
        f"SELECT count(*), max(read_ct), bool_and(vt <= clock_timestamp()) FROM {queue}"
        " WHERE read_ct = 0"
    ).fetchone()
    assert left == (4, 0, True), left

    requests = [r[0] for r in conn.execute("SELECT * FROM embeddings.dispatch_batches()")]
    assert [rows(r) for r in requests] == [1500 - push.MAX_ROWS]
