"""What a running worker's HTTP side counts in /metrics: each request answered, once, by route
and status code, timed from its head read to its answer sent; a search's own time inside it."""

from __future__ import annotations

import contextlib
import urllib.request
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from tests.acceptance.test_http import TOKEN, post
from tests.integration.test_read_only_database import frozen
from tests.support.models import MINILM
from tests.support.process import WorkerProcess, wait_for
from tests.support.rawhttp import exchange, request

Conn = psycopg.Connection[Any]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(worker: WorkerProcess) -> Samples:
    status, body = worker.get("/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def requests_since(before: Samples, after: Samples) -> dict[tuple[str, str], float]:
    """embed_worker_http_request_duration_seconds' counts that changed: (route, code) -> n."""
    changed = {}
    for (name, labels), value in after.items():
        if name == "embed_worker_http_request_duration_seconds_count":
            n = value - before.get((name, labels), 0)
            if n:
                found = dict(labels)
                changed[found["route"], found["code"]] = n
    return changed


def total(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0)


@pytest.fixture
def worker(
    conn: Conn, start_worker: Callable[..., WorkerProcess], worker_dsn: str
) -> WorkerProcess:
    """A worker serving `docs`, which its role (searching as itself) may read."""
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (MINILM,))
    conn.execute("INSERT INTO docs VALUES (1, 'refunds take 14 days'), (2, 'shipping is free')")
    role = str(conninfo_to_dict(worker_dsn)["user"])
    conn.execute(sql.SQL("GRANT SELECT ON docs TO {}").format(sql.Identifier(role)))
    process = start_worker(EMBED_HTTP_TOKEN=TOKEN)
    process.wait_ready()
    wait_for(
        lambda: conn.execute("SELECT count(embedding) FROM docs").fetchone() == (2,),
        60,
        0.2,
        "docs to be embedded",
    )
    return process


def test_each_request_counts_once_by_route_and_status(worker: WorkerProcess) -> None:
    before = scrape(worker)
    assert worker.get("/healthz")[0] == 200
    assert post(worker, "/search", {"table": "docs", "query": "refund", "k": 1})[0] == 200
    asked = {"table": "docs", "query": "refund", "filter": {"nowhere": 1}}
    assert post(worker, "/search", asked)[0] == 400  # the caller's filter
    assert post(worker, "/search", {"table": "docs", "query": "x"}, token="wrong")[0] == 401
    assert worker.get("/no/such/route/" + "x" * 50)[0] == 404
    with pytest.raises(urllib.error.HTTPError):  # GET where only POST goes: 405
        urllib.request.urlopen(worker.url + "/search", timeout=5)
    expected = {
        ("/healthz", "200"): 1,
        ("/search", "200"): 1,
        ("/search", "400"): 1,
        ("/search", "401"): 1,
        ("/search", "405"): 1,
        ("other", "404"): 1,  # any path no route has: no series of a client's making
    }
    # A thread that answered counts its request just after the answer left, so the last may
    # be counted a moment after the client read it: scraped until all are (a scrape counts
    # itself once it has gone: the first one, at least, by then).
    scraped: list[Samples] = []
    found: dict[tuple[str, str], float] = {}

    def counted() -> bool:
        scraped[:] = [scrape(worker)]
        found.clear()
        found.update(requests_since(before, scraped[0]))
        return found.get(("/metrics", "200"), 0) >= 1 and _without_scrapes(found) == expected

    with contextlib.suppress(TimeoutError):
        wait_for(counted, 10, 0.05, "the requests to be counted")
    assert _without_scrapes(found) == expected
    assert found[("/metrics", "200")] >= 1
    after = scraped[0]

    # The searches' own time is inside their requests' (both answered by the service).
    def grown(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    searched = sum(
        grown("embed_worker_search_duration_seconds_sum", outcome=outcome)
        for outcome in ("answered", "refused")
    )
    answered = sum(
        grown("embed_worker_http_request_duration_seconds_sum", route="/search", code=code)
        for code in ("200", "400")
    )
    assert 0 < searched < answered


def test_a_request_refused_for_its_declared_length_counts_as_one(worker: WorkerProcess) -> None:
    """Its head was read in full: a request, counted with its status (only a head that could
    not be read is not), even though its connection closes after the answer."""
    assert worker.port is not None
    auth = [("Authorization", f"Bearer {TOKEN}"), ("Content-Type", "application/json")]
    refused = {
        "413": [("Content-Length", "2000000")],
        "400": [("Content-Length", "x")],
        "411": [("Transfer-Encoding", "chunked")],
    }
    both = [("Transfer-Encoding", "chunked"), ("Content-Length", "2")]
    before = scrape(worker)
    for code, headers in [*refused.items(), ("400", both)]:
        sent = request("POST", "/search", b"{}", headers=[*auth, *headers])
        assert [a.status for a in exchange(worker.port, sent)] == [int(code)]
    expected = {("/search", "413"): 1, ("/search", "400"): 2, ("/search", "411"): 1}
    found: dict[tuple[str, str], float] = {}

    def counted() -> bool:
        found.clear()
        found.update(_without_scrapes(requests_since(before, scrape(worker))))
        return found == expected

    with contextlib.suppress(TimeoutError):
        wait_for(counted, 10, 0.05, "the refused requests to be counted")
    assert found == expected


def test_database_up_says_what_readyz_says(
    conn: Conn, start_worker: Callable[..., WorkerProcess]
) -> None:
    """A database that stops taking writes: /readyz answers 503 and the gauge is 0 (it stayed 1:
    the pipeline's sessions, older than the setting, went on); once it takes them again, both
    are back together (the gauge lagged /readyz by the fetcher's reconnect backoff)."""
    worker = start_worker(EMBED_HTTP_TOKEN=TOKEN)
    worker.wait_ready()

    def up() -> float:
        return total(scrape(worker), "embed_worker_database_up")

    def ready() -> float:
        return total(scrape(worker), "embed_worker_ready")

    assert up() == 1 and ready() == 1
    with frozen(conn):
        wait_for(lambda: worker.get("/readyz")[0] == 503, 30, 0.1, "/readyz to answer 503")
        assert up() == 0 and ready() == 0
    wait_for(lambda: worker.get("/readyz")[0] == 200, 30, 0.1, "/readyz to answer 200")
    assert up() == 1 and ready() == 1


def _without_scrapes(found: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    return {key: n for key, n in found.items() if key != ("/metrics", "200")}


def test_a_search_of_a_table_another_session_holds_locked_is_a_503_to_retry(
    conn: Conn, worker: WorkerProcess, dsn: str
) -> None:
    """An ALTER TABLE or LOCK TABLE held past the search's lock timeout (EMBED_LOCK_TIMEOUT_MS)
    answered 500 with the server's raw "canceling statement due to lock timeout" and its
    QUERY: the search is nobody's mistake and may succeed a second later."""
    asked = {"table": "docs", "query": "refund", "k": 1}
    assert post(worker, "/search", asked)[0] == 200
    with psycopg.connect(dsn) as holder:
        holder.execute("LOCK TABLE docs IN ACCESS EXCLUSIVE MODE")
        status, headers, body = post(worker, "/search", asked)
    assert status == 503, body
    assert "lock" in body["error"] and "EMBED_LOCK_TIMEOUT_MS" in body["error"]
    assert "QUERY" not in body["error"]
    assert headers.get("Retry-After") == "1"
    assert post(worker, "/search", asked)[0] == 200  # the lock let go: answered
