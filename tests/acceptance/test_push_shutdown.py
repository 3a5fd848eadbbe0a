"""SIGTERM while a push request (POST /functions/v1/embed) is being processed: the real process,
a real signal. The batch in flight is finished and written, the jobs not started are handed
back at once, the request is answered, and the process exits 0 (DESIGN.md: SIGTERM)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

import psycopg

from tests.acceptance.test_http import TOKEN, post
from tests.support.jobs import JOBS
from tests.support.process import WorkerProcess, wait_for

Conn = psycopg.Connection[Any]


def embedded(conn: Conn) -> int:
    row = conn.execute("SELECT count(embedding) FROM docs").fetchone()
    assert row is not None
    return int(row[0])


def test_sigterm_during_a_push_request_answers_it_and_exits_0(
    conn: Conn, start_worker: Callable[..., WorkerProcess]
) -> None:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'all-MiniLM-L6-v2')")
    conn.execute(
        "INSERT INTO docs SELECT g, 'document ' || g || ': ' || repeat('words about topic ' || (g % 17) || ' ', 1 + g % 9)"
        " FROM generate_series(1, 1000) g"
    )
    # One request of about 1,000 rows, as embeddings.dispatch() would post it (the triggers'
    # jobs carry up to 128 keys each).
    (body,) = [
        r[0]
        for r in conn.execute("SELECT * FROM embeddings.dispatch_batches(100, 1, 300)").fetchall()
    ]
    worker = start_worker(EMBED_PULL="false", EMBED_HTTP_TOKEN=TOKEN, EMBED_GRACE_SECONDS=60)
    worker.wait_ready()

    answers: list[tuple[int, dict[str, str], Any]] = []
    client = threading.Thread(
        target=lambda: answers.append(post(worker, "/functions/v1/embed", body)), daemon=True
    )
    client.start()
    wait_for(lambda: embedded(conn) > 0, timeout=60, what="the request's first batch")
    worker.signal(signal.SIGTERM)
    assert worker.wait_exit(60) == 0, worker.log_text()[-3000:]
    client.join(10)
    assert "terminate called" not in worker.log_text()

    # Answered: what was written as completed, the rest as handed back.
    assert answers, "the client got no answer"
    status, headers, result = answers[0]
    assert status == 200, result
    completed, failed = result["completedJobs"], result["failedJobs"]
    assert completed and failed, result
    assert headers["x-completed-jobs"] == str(len(completed))
    assert all("handed back" in job["error"] for job in failed), failed
    assert sorted(job["jobId"] for job in completed + failed) == sorted(
        job["jobId"] for job in body
    )
    done = embedded(conn)
    assert done < 1000
    # Nothing lost: the completed jobs are gone, the handed-back ones are visible again now,
    # not after dispatch()'s 300 s lease.
    left = conn.execute(
        f"SELECT count(*), count(*) FILTER (WHERE vt > now() + interval '5 seconds') FROM {JOBS}"
    ).fetchone()
    assert left == (len(failed), 0), left
