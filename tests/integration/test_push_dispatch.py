"""embeddings.dispatch() through pg_net (tests/support/pg_net.py: the real one where the server
preloads it, else a stand-in): a post that never reached a worker, or that the worker did not
take, is not an attempt; one the worker took is, and so is a job read again since."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.support import pg_net
from tests.support.cluster import Cluster
from tests.support.fetch import fetch_value
from worker.cli import doctor
from worker.cli.findings import Finding
from worker.config import Settings

Conn = psycopg.Connection[Any]

JOBS = "pgmq.q_embedding_jobs"
ATTEMPTS = 5  # EMBED_MAX_ATTEMPTS' default


@pytest.fixture
def net(conn: Conn, cluster: Cluster) -> Iterator[pg_net.Net]:
    with pg_net.net_for(conn, cluster.admin_dsn) as found:
        yield found


@pytest.fixture
def jobs(conn: Conn) -> list[int]:
    """Three jobs of one row each, as the Supabase guide's triggers send them."""
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs SELECT g, 'document ' || g FROM generate_series(1, 3) g")
    target = fetch_value(conn, "SELECT embeddings.watch('docs', 'body', triggers => false)")
    conn.execute("SELECT pgmq.purge_queue('embedding_jobs_backfill')")  # watch()'s jobs
    conn.execute(
        "SELECT embeddings_internal.enqueue_keys(%s, ARRAY[g]::bigint[]) FROM generate_series(1, 3) g",
        (target,),
    )
    return [r[0] for r in conn.execute(f"SELECT msg_id FROM {JOBS} ORDER BY msg_id")]


def dispatch(conn: Conn, url: str, lease: int = 1) -> int:
    """One request per job; `lease`: the jobs' visibility timeout, and pg_net's timeout."""
    return int(
        fetch_value(
            conn,
            "SELECT embeddings.dispatch(%s, batch_size => 1, timeout_seconds => %s)",
            (url, lease),
        )
    )


def reads(conn: Conn) -> list[int]:
    return [r[0] for r in conn.execute(f"SELECT read_ct FROM {JOBS} ORDER BY msg_id")]


def visible(conn: Conn) -> int:
    return int(fetch_value(conn, f"SELECT count(*) FROM {JOBS} WHERE vt <= clock_timestamp()"))


@pytest.mark.parametrize("status", [None, 401, 404, 503], ids=["refused", "401", "404", "503"])
def test_posts_that_never_reached_a_worker_are_not_attempts(
    conn: Conn, net: pg_net.Net, jobs: list[int], status: int | None
) -> None:
    """A worker unreachable (or refusing the token, not there, stopping) for more dispatch()
    runs than EMBED_MAX_ATTEMPTS: no job gains an attempt. Before, each run's read counted, and
    a job read 5 times was dead-lettered at its first real failure."""
    for _ in range(ATTEMPTS + 1):
        assert dispatch(conn, net.url(status)) == len(jobs)
        net.answer(conn)
        # Before, the jobs came back only as their lease (1 s) ended; now the next dispatch()
        # gives them back at once (each run settles the last one's requests first).
        fetch_value(conn, "SELECT embeddings_internal.settle_dispatched()")
        assert visible(conn) == len(jobs)
    assert reads(conn) == [0] * len(jobs)
    failed = conn.execute(
        "SELECT status_code, error, given_back FROM embeddings.dispatched ORDER BY request_id"
    ).fetchall()
    assert len(failed) == len(jobs) * (ATTEMPTS + 1)
    assert {(code, back) for code, _, back in failed} == {(status, 1)}
    error = failed[0][1]
    assert (error == pg_net.REFUSED) if status is None else error.startswith(f"HTTP {status}")


def test_a_post_the_worker_took_is_an_attempt(conn: Conn, net: pg_net.Net, jobs: list[int]) -> None:
    """200: the worker took the jobs (its per-job failures are answered in the body, and it
    settles them itself): each keeps its read, and the request is forgotten."""
    before = conn.execute(f"SELECT msg_id, vt FROM {JOBS} ORDER BY msg_id").fetchall()
    assert dispatch(conn, net.url(200), lease=300) == len(jobs)
    net.answer(conn)
    assert fetch_value(conn, "SELECT embeddings_internal.settle_dispatched()") == 0
    assert reads(conn) == [1] * len(jobs)
    assert visible(conn) == 0
    assert before != conn.execute(f"SELECT msg_id, vt FROM {JOBS} ORDER BY msg_id").fetchall()
    assert fetch_value(conn, "SELECT count(*) FROM embeddings.dispatched") == 0


def test_a_job_read_again_keeps_its_new_read(conn: Conn, net: pg_net.Net, jobs: list[int]) -> None:
    """A failed post's jobs get their read back only while they are still in the read it
    carried: here the worker handed them back itself (a SIGTERM's 503: read_ct - 1, visible),
    and another dispatch read them again before the 503 was settled."""
    assert dispatch(conn, net.url(503), lease=300) == len(jobs)
    conn.execute(f"UPDATE {JOBS} SET read_ct = read_ct - 1, vt = clock_timestamp()")
    conn.execute("SELECT * FROM embeddings.dispatch_batches(1, 10, 300)")  # read again
    net.answer(conn)
    assert fetch_value(conn, "SELECT embeddings_internal.settle_dispatched()") == 0
    assert reads(conn) == [1] * len(jobs)
    assert visible(conn) == 0
    assert conn.execute("SELECT DISTINCT given_back FROM embeddings.dispatched").fetchall() == [
        (0,)
    ]


def test_requests_are_forgotten(conn: Conn, net: pg_net.Net, jobs: list[int]) -> None:
    """Failed requests are kept an hour (doctor reports them), unanswered ones for pg_net's TTL
    (their answer is gone after it)."""
    dispatch(conn, net.url(None))
    net.answer(conn)
    fetch_value(conn, "SELECT embeddings_internal.settle_dispatched()")
    assert fetch_value(conn, "SELECT count(*) FROM embeddings.dispatched") == len(jobs)
    conn.execute(
        "UPDATE embeddings.dispatched SET sent_at = now() - interval '62 minutes',"
        " answered_at = now() - interval '61 minutes'"
    )
    dispatch(conn, net.url(None))  # (unanswered yet: kept)
    assert fetch_value(conn, "SELECT count(*) FROM embeddings.dispatched") == len(jobs)
    conn.execute(
        "UPDATE embeddings.dispatched SET sent_at = now() - interval '6 hours 1 minute',"
        " request_id = -request_id"  # (an answer pg_net deleted with the TTL)
    )
    fetch_value(conn, "SELECT embeddings_internal.settle_dispatched()")
    assert fetch_value(conn, "SELECT count(*) FROM embeddings.dispatched") == 0


def test_doctor_reports_failed_posts(
    conn: Conn, dsn: str, net: pg_net.Net, jobs: list[int]
) -> None:
    """pg_cron says `succeeded` whatever pg_net did with the posts: doctor says which failed,
    read by dispatch() or, when it has not run since, straight from pg_net's answers."""
    assert push_checks(dsn) == []  # push mode never ran
    dispatch(conn, net.url(None))
    net.answer(conn)
    conn.execute("UPDATE embeddings.dispatched SET sent_at = sent_at - interval '2 minutes'")
    [unread] = push_checks(dsn)
    assert unread.level == "FAIL" and f"{len(jobs)} of them failed" in unread.detail
    assert (
        pg_net.REFUSED in unread.detail and "is its pg_cron job still scheduled?" in unread.detail
    )
    dispatch(conn, net.url(401))  # settles the refused ones
    net.answer(conn)
    fetch_value(conn, "SELECT embeddings_internal.settle_dispatched()")
    [failed] = push_checks(dsn)
    assert failed.level == "FAIL"
    assert (
        f"{2 * len(jobs)} post(s) of embeddings.dispatch() failed in the last hour" in failed.detail
    )
    assert (
        pg_net.REFUSED in failed.detail
        and f"{2 * len(jobs)} job(s) given their read back" in failed.detail
    )


def push_checks(dsn: str) -> list[Finding]:
    return [f for f in doctor.check(dsn, Settings(database_url=dsn)) if f.check == "push mode"]
