"""A search's time in /metrics (worker/retrieval/search.py): every search through the service
counts once, by its outcome as POST /search answers it, and each stage it ran (the question's
embedding, the SQL on a leased connection, the rerank) counts as it runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from tests.integration.test_rerank import RERANKER, reranker_path
from worker import metrics
from worker.models.files import ModelLocation
from worker.models.loaded import LoadedModels
from worker.models.query_batch import QueryBatchers
from worker.models.reranker import LoadedRerankers
from worker.process.runner import Worker
from worker.retrieval.errors import InvalidSearch
from worker.retrieval.pool import SearchConnections
from worker.retrieval.request import SearchRequest
from worker.retrieval.search import SearchService

__all__ = ["reranker_path"]  # a fixture of tests/integration/test_rerank.py

Conn = psycopg.Connection[Any]


class Counts:
    """The search histograms' counts now, and what changed since (this process's registry:
    other tests of the session count there too, so only the differences are asserted)."""

    def __init__(self) -> None:
        self.before = self.now()

    @staticmethod
    def now() -> dict[str, float]:
        found = {}
        for outcome in metrics.SEARCH_OUTCOMES:
            found[outcome] = _count("embed_worker_search_duration_seconds", outcome=outcome)
        for stage in metrics.SEARCH_STAGES:
            found[stage] = _count("embed_worker_search_stage_duration_seconds", stage=stage)
        return found

    def since(self) -> dict[str, float]:
        now = self.now()
        changed = {name: now[name] - self.before[name] for name in now}
        self.before = now
        return {name: n for name, n in changed.items() if n}


def _count(name: str, **labels: str) -> float:
    value = metrics.REGISTRY.get_sample_value(f"{name}_count", labels)
    assert value is not None, (name, labels)  # the series exist from the start
    return value


@pytest.fixture
def docs(conn: Conn, minilm: str, run_once: Callable[..., Worker]) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (minilm,))
    conn.execute(
        "INSERT INTO docs VALUES (1, 'refunds take 14 days'), (2, 'shipping is free'),"
        " (3, 'returns within 30 days')"
    )
    run_once()


@pytest.fixture
def service(dsn: str, embedders: LoadedModels, reranker_path: str) -> Iterator[SearchService]:
    searches = SearchConnections(dsn, max_size=1)
    rerankers = LoadedRerankers(ModelLocation.of(reranker_path), threads=1)
    try:
        yield SearchService(
            searches.connection, QueryBatchers(embedders.get), load_reranker=rerankers.get
        )
    finally:
        searches.close()
        rerankers.close()


def test_each_search_counts_once_by_outcome_and_each_stage_as_it_runs(
    docs: None, service: SearchService
) -> None:
    counts = Counts()
    # The table's first search: its target read on one lease, the question embedded, ranked
    # on another.
    assert len(service.search(SearchRequest("docs", "refund", k=2))) == 2
    assert counts.since() == {"answered": 1, "embed": 1, "sql": 2}
    # Known now: one lease.
    service.search(SearchRequest("docs", "shipping", k=2))
    assert counts.since() == {"answered": 1, "embed": 1, "sql": 1}
    service.search(SearchRequest("docs", "refund", k=2, rerank=RERANKER))
    assert counts.since() == {"answered": 1, "embed": 1, "sql": 1, "rerank": 1}


def test_a_search_that_fails_counts_as_post_search_answers_it(
    docs: None, service: SearchService, conn: Conn
) -> None:
    counts = Counts()
    # The caller's to fix (a 400): its filter names no column.
    with pytest.raises(InvalidSearch):
        service.search(SearchRequest("docs", "refund", k=2, filter={"nowhere": 1}))
    assert counts.since() == {"refused": 1, "embed": 1, "sql": 2}
    # May succeed later (a 503): the reranker the table asks for is not on this worker. One
    # lease: the target found changed (a rerank stage now), read again, its reranker loaded
    # before the ranking would run.
    conn.execute("SELECT embeddings.set_rerank('docs', 'no-such-reranker')")
    with pytest.raises(Exception, match="no-such-reranker"):
        service.search(SearchRequest("docs", "refund", k=2))
    assert counts.since() == {"unavailable": 1, "embed": 1, "sql": 1}


def test_a_search_that_breaks_counts_as_failed(
    docs: None, dsn: str, embedders: LoadedModels
) -> None:
    """An error of no kind we know (a bug's: a 500) is `failed`, and the search raises it."""

    def broken(name: str) -> Any:
        raise RuntimeError("a bug")

    searches = SearchConnections(dsn, max_size=1)
    try:
        service = SearchService(searches.connection, QueryBatchers(broken))
        counts = Counts()
        with pytest.raises(RuntimeError, match="a bug"):
            service.search(SearchRequest("docs", "refund", k=2))
        assert counts.since() == {"failed": 1, "embed": 1, "sql": 1}
    finally:
        searches.close()
