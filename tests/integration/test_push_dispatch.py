"""embeddings.dispatch() through pg_net (tests/support/pg_net.py: the real one where the server
preloads it, else a stand-in): a post that never reached a worker, or that the worker did not
take, is not an attempt; one the worker took is, and so is a job read again since."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.support import guide, pg_net
from tests.support.cluster import Cluster
from tests.support.fetch import fetch_value
from tests.support.process import wait_for
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


def probe_due(conn: Conn) -> None:
    """The backoff's delay has passed."""
    if fetch_value(conn, "SELECT to_regclass('embeddings.dispatch_endpoints') IS NOT NULL"):
        conn.execute(
            "UPDATE embeddings.dispatch_endpoints SET next_probe_at = now() - interval '1 second'"
            " WHERE next_probe_at IS NOT NULL"
        )


def end_leases(conn: Conn) -> None:
    """The jobs' lease (and the vt recorded with their request) ran out, an hour ago."""
    conn.execute(f"UPDATE {JOBS} SET vt = vt - interval '1 hour'")
    conn.execute(
        "UPDATE embeddings.dispatched SET vts = ARRAY(SELECT v - interval '1 hour' FROM unnest(vts) v)"
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
    posted = []
    for _ in range(ATTEMPTS + 1):
        posted.append(dispatch(conn, net.url(status)))
        net.answer(conn)
        # Before, the jobs came back only as their lease (1 s) ended; now the next dispatch()
        # gives them back at once (each run settles the last one's requests first).
        fetch_value(conn, "SELECT embeddings_internal.settle_dispatched()")
        assert visible(conn) == len(jobs)
        probe_due(conn)
    # (three failed posts: the endpoint backs off, one job a run)
    assert posted == [len(jobs)] + [1] * ATTEMPTS
    assert reads(conn) == [0] * len(jobs)
    failed = conn.execute(
        "SELECT status_code, error, given_back FROM embeddings.dispatched ORDER BY request_id"
    ).fetchall()
    assert len(failed) == len(jobs) + ATTEMPTS
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


def test_an_endpoint_whose_posts_keep_failing_gets_one_job_at_a_time(
    conn: Conn, net: pg_net.Net, jobs: list[int]
) -> None:
    """Before, a worker that was down got every job posted again on every run, forever, and
    nothing said so: pg_net's request table filled, the log stayed silent. Now the third failed
    post in a row makes dispatch() back off: a WARNING, then one job (a probe) at a time, once
    the last one is answered and its delay (10 s, doubling, 5 minutes at most) has passed, until
    a post goes through."""
    warnings: list[str] = []
    conn.add_notice_handler(
        lambda notice: (
            warnings.append(str(notice.message_primary))
            if notice.severity_nonlocalized == "WARNING"
            else None
        )
    )
    url = net.switch_url  # 503 until switched
    assert dispatch(conn, url, lease=300) == len(jobs)
    net.answer(conn)
    assert dispatch(conn, url, lease=300) == 0  # settles 3 failures: backing off
    (warning,) = warnings
    assert f"3 posts in a row to {url} failed" in warning and "HTTP 503" in warning, warning
    endpoint = conn.execute(
        "SELECT failed_posts, failing_since = (SELECT min(sent_at) FROM embeddings.dispatched),"
        " next_probe_at - clock_timestamp() BETWEEN interval '5 seconds' AND interval '10 seconds'"
        " FROM embeddings.dispatch_endpoints WHERE url = %s",
        (url,),
    ).fetchone()
    assert endpoint == (3, True, True), endpoint
    assert visible(conn) == len(jobs)  # given back, not read again

    probe_due(conn)
    assert dispatch(conn, url, lease=300) == 1  # the probe: one job
    probe_due(conn)
    assert dispatch(conn, url, lease=300) == 0  # its answer not read yet: nothing more
    net.answer(conn)
    assert dispatch(conn, url, lease=300) == 0  # a failed probe: the delay doubles
    delay = fetch_value(
        conn,
        "SELECT extract(epoch FROM next_probe_at - clock_timestamp())::integer"
        " FROM embeddings.dispatch_endpoints",
    )
    assert 15 <= delay <= 20, delay
    assert len(warnings) == 1  # said once, as the backoff began
    assert reads(conn) == [0] * len(jobs)

    net.switch(200)  # the worker is back
    probe_due(conn)
    assert dispatch(conn, url, lease=300) == 1
    net.answer(conn)
    assert dispatch(conn, url, lease=300) == len(jobs) - 1  # back to full requests
    assert fetch_value(conn, "SELECT count(*) FROM embeddings.dispatch_endpoints") == 0


def test_a_timed_out_post_is_given_back_whichever_comes_first(
    conn: Conn, net: pg_net.Net, jobs: list[int]
) -> None:
    """pg_net times a request out `timeout_seconds` (the jobs' lease) after its worker took it,
    and commits the answer when the last request of its batch is done: after the lease has
    ended. Before, a dispatch() between the two read the jobs again (a second post to a worker
    that did not answer the first) and the timed-out post counted as an attempt; now the jobs
    of a request not answered yet stay in its read until the answer says what became of it."""
    assert dispatch(conn, net.hanging_url, lease=2) == len(jobs)
    end_leases(conn)  # before pg_net's timeout is answered
    assert dispatch(conn, net.hanging_url, lease=2) == 0  # held: not read, not posted again
    assert reads(conn) == [1] * len(jobs) and visible(conn) == 0
    net.answer(conn)  # the timeouts
    assert fetch_value(conn, "SELECT embeddings_internal.settle_dispatched()") == len(jobs)
    assert reads(conn) == [0] * len(jobs)
    assert visible(conn) == len(jobs)
    errors = [r[0] for r in conn.execute("SELECT error FROM embeddings.dispatched")]
    assert errors and all(e.startswith("Timeout of 2000 ms reached") for e in errors), errors


def test_the_guides_process_embeddings_as_the_docs_repoint_it_counts_no_undelivered_post(
    conn: Conn, net: pg_net.Net, jobs: list[int]
) -> None:
    """The Supabase guide's cron job runs util.process_embeddings(); docs/supabase.md says what
    to change for it to post to the worker. Before, only util.invoke_edge_function was
    repointed: the guide's own pgmq.read counted every post as an attempt, those that never
    reached the worker too, and a job was dead-lettered at its first real failure after 5 such
    runs. Now the doc has util.process_embeddings() call dispatch(), and its rule holds."""
    worker = net.url(None).removesuffix("/functions/v1/embed")  # nothing listens there
    guide.install(conn, worker)
    guide.repointed(conn, worker)
    for _ in range(ATTEMPTS + 1):
        # (a lease of 1 s: the guide's read waits it out, dispatch() gives the jobs back first)
        wait_for(lambda: visible(conn) == len(jobs), timeout=10, what="the jobs' lease")
        conn.execute("SELECT util.process_embeddings(timeout_milliseconds => 1000)")
        net.answer(conn)
        probe_due(conn)
    fetch_value(conn, "SELECT embeddings_internal.settle_dispatched()")  # as the next run would
    assert reads(conn) == [0] * len(jobs)
    # (the third failed post made dispatch() back off: one job a run since)
    sent = conn.execute(
        "SELECT cardinality(msg_ids) FROM embeddings.dispatched ORDER BY request_id"
    )
    assert [n for (n,) in sent] == [len(jobs)] * 3 + [1]


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
    dispatch(conn, net.url(503))  # (unanswered yet: kept; the refused url is backing off)
    assert fetch_value(conn, "SELECT count(*) FROM embeddings.dispatched") == len(jobs)
    conn.execute(
        "UPDATE embeddings.dispatched SET sent_at = now() - interval '6 hours 1 minute',"
        " request_id = -request_id"  # (an answer pg_net deleted with the TTL)
    )
    fetch_value(conn, "SELECT embeddings_internal.settle_dispatched()")
    assert fetch_value(conn, "SELECT count(*) FROM embeddings.dispatched") == 0


def test_doctor_says_when_pg_nets_worker_takes_no_requests(
    conn: Conn, dsn: str, net: pg_net.Net, jobs: list[int]
) -> None:
    """pg_net's background worker dead (or running in another database): dispatch() runs on
    schedule, its requests wait in pg_net's queue and are never answered. Before, doctor asked
    whether dispatch()'s pg_cron job was still scheduled, which it was."""
    if isinstance(net, pg_net.RealNet):
        pytest.skip("the real pg_net's worker takes the requests: the stand-in's never does")
    dispatch(conn, net.url(200))
    conn.execute("UPDATE embeddings.dispatched SET sent_at = sent_at - interval '2 minutes'")
    since = fetch_value(conn, "SELECT min(sent_at) FROM embeddings.dispatched")

    [untaken] = push_checks(dsn)

    assert untaken.level == "FAIL"
    assert untaken.detail == (
        f"pg_net's background worker is not taking requests: {len(jobs)} request(s) of "
        f"embeddings.dispatch() have waited in net.http_request_queue since "
        f"{since:%Y-%m-%d %H:%M:%S %Z}, unsent"
    )
    assert "pg_net.database_name" in untaken.fix and "net.worker_restart()" in untaken.fix
    net.answer(conn)  # taken and answered: dispatch() has not read the answers yet
    [unread] = push_checks(dsn)
    assert "is its pg_cron job still scheduled?" in unread.detail


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
    # (three posts in a row failed to each url: dispatch() backs off from both, and says since when)
    refused, unauthorized, failed = push_checks(dsn)
    since = fetch_value(conn, "SELECT min(sent_at) FROM embeddings.dispatched")
    assert refused.level == unauthorized.level == "FAIL"
    assert refused.detail.startswith(
        f"embeddings.dispatch() is backing off from {net.url(None)} since {since:%Y-%m-%d %H:%M:%S}"
    ), refused.detail
    assert f"{len(jobs)} post(s) in a row failed, the last: {pg_net.REFUSED}" in refused.detail
    assert "it posts one job at a time until one goes through" in refused.detail
    assert f"backing off from {net.url(401)}" in unauthorized.detail
    assert unauthorized.fix == "dispatch()'s token must be the worker's EMBED_HTTP_TOKEN"
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
