"""Push mode (POST /functions/v1/embed) leases (issue 12, item 7): a dispatch() lease is never
shortened, push leases are renewed like pulled ones, and one request's work is bounded."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.support.fetch import fetch_value
from worker.config import Settings
from worker.http import push
from worker.models.loaded import LoadedModels
from worker.pipeline import faults
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]
Jobs = list[dict[str, Any]]

DISPATCH_LEASE = 300


@pytest.fixture
def worker(settings: Settings, embedders: LoadedModels) -> Worker:
    """A worker as its HTTP server sees it (push work runs in the request's thread)."""
    return Worker(settings, embedders=embedders, progress=False, handle_signals=False)


def pushed_to(worker: Worker, settings: Settings | None = None) -> push.Push:
    """Push mode wired to `worker` as its HTTP server wires it (worker/http/server.py)."""
    return push.Push(
        dsn=worker.dsn,
        settings=settings or worker.settings,
        lanes=worker.lanes,
        registry=worker.registry,
        embedders=worker.embedders,
    )


@pytest.fixture
def docs(conn: Conn, minilm: str) -> Iterator[int]:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs SELECT g, 'document ' || g FROM generate_series(1, 6) g")
    row = conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s, triggers => false)", (minilm,)
    ).fetchone()
    assert row is not None
    # One job per row, as the Supabase guide's triggers send them.
    conn.execute("SELECT pgmq.purge_queue('embedding_jobs_backfill')")  # watch()'s jobs
    conn.execute(
        "SELECT embeddings_internal.enqueue_keys(%s, ARRAY[g]::bigint[]) FROM generate_series(1, 6) g",
        (row[0],),
    )
    yield int(row[0])


@pytest.fixture
def body(conn: Conn, docs: int) -> Jobs:
    """What embeddings.dispatch() would post (a push request's body): docs' jobs, leased for
    DISPATCH_LEASE seconds."""
    return list(
        fetch_value(
            conn, "SELECT * FROM embeddings.dispatch_batches(100, 1, %s)", (DISPATCH_LEASE,)
        )
    )


def seconds_left(conn: Conn) -> list[float]:
    return [
        float(r[0])
        for r in conn.execute(
            "SELECT extract(epoch FROM vt - clock_timestamp()) FROM pgmq.q_embedding_jobs"
            " ORDER BY msg_id"
        ).fetchall()
    ]


def test_a_dispatch_lease_is_kept_and_the_jobs_are_renewed_while_processed(
    conn: Conn, body: Jobs, worker: Worker
) -> None:
    seen: dict[str, Any] = {}

    def look() -> None:  # in the middle of the request, before inference
        seen["left"] = seconds_left(conn)
        seen["held"] = set(worker.lanes.live.leases.held())

    with faults.injected("embed", look):
        result = push.process(pushed_to(worker), body)

    assert len(result.completed) == 6
    assert min(seen["left"]) > DISPATCH_LEASE - 60  # not cut down to vt_seconds (30)
    assert seen["held"] == {job["jobId"] for job in body}  # the keeper renews them
    assert worker.lanes.live.leases.held() == {}
    assert conn.execute("SELECT count(embedding) FROM docs").fetchone() == (6,)


def test_one_request_embeds_a_bounded_number_of_rows_in_batches(
    conn: Conn, body: Jobs, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(push, "MAX_ROWS", 4)
    batches = []
    with faults.injected("embed", lambda: batches.append(1)):
        result = push.process(pushed_to(worker, worker.settings.with_overrides(batch_size=2)), body)

    assert [job["jobId"] for job in result.completed] == [job["jobId"] for job in body[:4]]
    assert len(batches) == 2  # two batches of two rows
    assert [job["jobId"] for job in result.failed] == [job["jobId"] for job in body[4:]]
    assert all("more than 4 rows" in job["error"] for job in result.failed)
    # The rest stays leased as dispatch() leased it: the next dispatch after that retries it.
    left = seconds_left(conn)
    assert len(left) == 2 and min(left) > DISPATCH_LEASE - 60
    assert conn.execute("SELECT count(embedding) FROM docs").fetchone() == (4,)


def test_concurrent_requests_are_bounded(
    conn: Conn, body: Jobs, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(push, "BUSY_WAIT_SECONDS", 0.01)
    held = 0
    while push.SLOTS.acquire(blocking=False):  # every slot busy with another request
        held += 1
    try:
        result = push.process(pushed_to(worker), body)
    finally:
        for _ in range(held):
            push.SLOTS.release()
    assert held == push.MAX_CONCURRENT_REQUESTS
    assert result.completed == []
    assert all("busy" in job["error"] for job in result.failed)
    assert conn.execute("SELECT count(embedding) FROM docs").fetchone() == (0,)
