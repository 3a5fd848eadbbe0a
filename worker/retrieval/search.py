"""A search from its words to its results, the one way every client searches: POST /search,
`embed-worker search` and Python (SearchService) differ only in how the request arrives and
where the connections come from.

No connection is held while the CPU works:
  1. the question is embedded with the model the table's target had at its last search,
     batched with other questions for that model (worker/models/query_batch.py); the first
     search of a table reads its target first;
  2. a connection is leased for the SQL alone, taken and given back without a statement of
     its own (worker/retrieval/pool.py; one found broken: the search asks once more), and
     one attempt runs on it (worker/retrieval/attempt.py): the target as it is now (the one
     read last, checked by one statement: worker/retrieval/targets.py; a model other than
     the one embedded with: back to 1 with it), the rerank stage's registration, the ranking
     (by meaning, or hybrid where the target has full-text search), and the check that the
     target did not change meanwhile: for a table whose target is known, all three in one
     exchange (a pipeline). The DISCARD of the session the ranking ran others' code in
     follows the answer: the pool's, on its own thread, before any other search may take the
     connection (a search that went one statement at a time sends it with its last check
     instead). The session's cached plans are kept for the same target's next searches, and
     dropped first by a search of any other (session_discard_plans in queries.sql);
  3. the rerank stage (a cross-encoder's CPU, a remote API's wait) runs with none.
A query is never compared with another model's vectors. Each search's time, by outcome, and
each stage's (embed, sql, rerank) are in /metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import numpy.typing as npt

from worker import db, exceptions, metrics
from worker.config import Settings
from worker.models.embedder import TextModel
from worker.models.query_batch import QueryBatchers
from worker.models.reranker import LoadedRerankers
from worker.retrieval import rerank
from worker.retrieval.attempt import LoadReranker, Ranked, attempt
from worker.retrieval.fusion import Fusion
from worker.retrieval.pool import SearchConnections
from worker.retrieval.request import SearchRequest
from worker.retrieval.targets import KnownTargets
from worker.target import Target

# A connection for one search's SQL, given back when the block ends.
Lease = Callable[[], AbstractContextManager[db.Connection]]

ATTEMPTS = 3  # model changes a search follows before answering with what it has


class _Broken(Exception):
    """The leased connection was lost during the search (`lost`, raised inside the lease)."""

    def __init__(self, lost: exceptions.ConnectionLost) -> None:
        super().__init__(str(lost))
        self.lost = lost


class SearchService:
    """Searches over connections from `lease`, their questions embedded by `questions`.
    Safe to share between threads (as POST /search's worker threads do)."""

    def __init__(
        self,
        lease: Lease,
        questions: QueryBatchers,
        *,
        load_reranker: LoadReranker | None = None,
        then: str = "",
        recover: Callable[[], None] | None = None,
    ) -> None:
        """`then` ends the hint given for an unwatched table; `recover`, called once a leased
        connection was found broken, before the search asks once more (the pool's check)."""
        self.lease = lease
        self.recover = recover
        self.questions = questions
        self.load_reranker = load_reranker
        self.then = then
        self.targets = KnownTargets()
        self._closers: list[Callable[[], None]] = []

    @classmethod
    def open(cls, settings: Settings | None = None) -> SearchService:
        """A service for a Python program, as POST /search's: the search role's pooled
        connections (EMBED_SEARCH_DATABASE_URL, else the worker's database), the models and
        rerankers found where the settings say, questions batched; close() when done.

            with SearchService.open() as searches:
                results = searches.search(SearchRequest("docs", "how do I reset it", k=5))
        """
        settings = settings or Settings.from_env()
        models = settings.loaded_models()
        connections = SearchConnections(
            settings.search_database_url or settings.dsn,
            max_size=settings.search_pool_size,
            lock_timeout_ms=settings.lock_timeout_ms,
            max_tables=settings.session_max_tables,
            per_transaction=settings.per_transaction,
        )
        rerankers = LoadedRerankers(
            settings.model_location, settings.threads, api_key=settings.api_key
        )
        service = cls(
            connections.connection,
            QueryBatchers(
                models.get,
                max_batch=settings.query_batch_size,
                max_wait=settings.query_batch_wait_ms / 1000,
            ),
            load_reranker=rerankers.get,
            recover=connections.check,
        )
        service._closers += [connections.close, rerankers.close]
        return service

    def close(self) -> None:
        for close in self._closers:
            close()

    def __enter__(self) -> SearchService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def search(self, request: SearchRequest) -> list[dict[str, Any]]:
        """Ranked results, one per row or, for a chunked target, per document
        (results.search_result()), reranked where the request or the target says so. Its time,
        by outcome, and its stages' are in /metrics."""
        started = time.perf_counter()
        try:
            results = self._search(request)
        except Exception as exc:
            metrics.SEARCH_SECONDS.labels(_outcome(exc)).observe(time.perf_counter() - started)
            raise
        metrics.SEARCH_SECONDS.labels("answered").observe(time.perf_counter() - started)
        return results

    def _search(self, request: SearchRequest) -> list[dict[str, Any]]:
        model = self.targets.model(request.table, request.column)
        vector = None if model is None else self._embed(model, request.query)
        try:
            found = self._ranked(request, model, vector)
        except _Broken:  # a pooled connection the server closed: once more, on a sound one
            if self.recover is not None:
                self.recover()
            try:
                found = self._ranked(request, model, vector)
            except _Broken as broken:
                raise broken.lost from None
        if found.reranker is None:
            return found.results
        with metrics.SEARCH_STAGE_SECONDS.labels("rerank").time():
            return rerank.reorder(found.results, request.query, found.reranker, request.k)

    def _ranked(
        self, request: SearchRequest, model: str | None, vector: npt.NDArray[np.float32] | None
    ) -> Ranked:
        for _ in range(ATTEMPTS):
            with self.lease() as conn, metrics.SEARCH_STAGE_SECONDS.labels("sql").time():
                try:
                    found = attempt(
                        conn,
                        request,
                        model,
                        vector,
                        targets=self.targets,
                        load_reranker=self.load_reranker,
                        then=self.then,
                    )
                except exceptions.ConnectionLost as lost:
                    raise _Broken(lost) from lost
            if isinstance(found, Ranked):
                return found
            if vector is None or found.model != model:  # first read, or another model now
                model = found.model
                vector = self._embed(model, request.query)
        # The target kept changing: its vectors are compared with nothing.
        raise exceptions.ConnectionLost(
            f"{request.table}'s target changed {ATTEMPTS} times during the search: ask again"
        )

    def _embed(self, model: str, query: str) -> npt.NDArray[np.float32]:
        with metrics.SEARCH_STAGE_SECONDS.labels("embed").time():
            vector: npt.NDArray[np.float32] = self.questions.embed(model, [query])[0]
        return vector


def _outcome(exc: Exception) -> str:
    """A failed search's outcome in /metrics, as POST /search answers it (worker/http/work.py,
    server.py): the caller's to fix (4xx), may succeed later (503), or failed (500)."""
    if isinstance(exc, exceptions.ConfigError | exceptions.TargetError):
        return "refused"
    if isinstance(exc, exceptions.ModelError | exceptions.ConnectionLost):
        return "unavailable"
    return "failed"


def run(
    conn: db.Connection,
    load_model: Callable[[str], TextModel],
    request: SearchRequest,
    *,
    load_reranker: LoadReranker | None = None,
    then: str = "",
) -> list[dict[str, Any]]:
    """One search on a connection the caller holds (tests, and callers with a session of
    their own): SearchService.search with `conn` for every lease."""
    service = SearchService(
        lambda: nullcontext(conn), QueryBatchers(load_model), load_reranker=load_reranker, then=then
    )
    return service.search(request)


def ranked(
    conn: db.Connection,
    load_model: Callable[[str], TextModel],
    target: Target,
    query: str,
    k: int,
    *,
    filter: dict[str, Any] | None = None,
    mode: str = "auto",
    fusion: Fusion | None = None,
) -> list[dict[str, Any]]:
    """The first ranking alone (no rerank stage) of `target`, as a search of its table
    makes it."""
    parts = (str(target.schema), str(target.table))
    table = ".".join('"' + part.replace('"', '""') + '"' for part in parts)
    request = SearchRequest(
        table, query, k, target.embedding_column, filter, mode, fusion, rerank=False
    )
    return run(conn, load_model, request)
