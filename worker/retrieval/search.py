"""A search from its words to its results, the one way every client searches: POST /search,
`embed-worker search` and Python (SearchService) differ only in how the request arrives and
where the connections come from.

No connection is held while the CPU works:
  1. the question is embedded with the model the table's target had at its last search,
     batched with other questions for that model (worker/models/query_batch.py); the first
     search of a table reads its target first;
  2. a connection is leased for the SQL alone, taken and given back without a statement of
     its own (worker/retrieval/pool.py; one found broken: the search asks once more): the
     target as it is now (the one read last, checked by one statement:
     worker/retrieval/targets.py; a model other than the one embedded with: back to 1 with
     it), the rerank stage's registration, the ranking (by meaning, or hybrid where the
     target has full-text search), and the check that the target did not change meanwhile:
     for a table whose target is known, all three in one exchange (a pipeline). The DISCARD
     of the session the ranking ran others' code in follows the answer: the pool's, on its
     own thread, before any other search may take the connection (a search that went one
     statement at a time sends it with its last check instead). The session's cached plans
     are kept for the same target's next searches, and dropped first by a search of any
     other (session_discard_plans in queries.sql);
  3. the rerank stage (a cross-encoder's CPU, a remote API's wait) runs with none.
A query is never compared with another model's vectors.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from worker import db, exceptions
from worker.config import Settings
from worker.models.embedder import TextModel
from worker.models.query_batch import QueryBatchers
from worker.models.remote.rerank_spec import RerankerSpec
from worker.models.reranker import LoadedRerankers, Reranker
from worker.retrieval import rankings, rerank
from worker.retrieval.errors import InvalidSearch, search_errors
from worker.retrieval.fusion import Fusion
from worker.retrieval.pool import SearchConnections
from worker.retrieval.request import SearchRequest
from worker.retrieval.targets import (
    KnownTargets,
    check_statement,
    current_target,
    is_current,
    is_current_version,
    version_statement,
)
from worker.session_guard import GuardedConnection
from worker.target import Target

# A reranker by its name and its registration, if it is a remote one (LoadedRerankers.get).
LoadReranker = Callable[[str, RerankerSpec | None], Reranker]
# A connection for one search's SQL, given back when the block ends.
Lease = Callable[[], AbstractContextManager[db.Connection]]

ATTEMPTS = 3  # model changes a search follows before answering with what it has


class _Broken(Exception):
    """The leased connection was lost during the search (`lost`, raised inside the lease)."""

    def __init__(self, lost: exceptions.ConnectionLost) -> None:
        super().__init__(str(lost))
        self.lost = lost


@dataclass
class _Ranked:
    results: list[dict[str, Any]]
    reranker: Reranker | None


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
        (results.search_result()), reranked where the request or the target says so."""
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
        return rerank.reorder(found.results, request.query, found.reranker, request.k)

    def _ranked(
        self, request: SearchRequest, model: str | None, vector: npt.NDArray[np.float32] | None
    ) -> _Ranked:
        for _ in range(ATTEMPTS):
            with self.lease() as conn:
                try:
                    found = self._attempt(conn, request, model, vector)
                except exceptions.ConnectionLost as lost:
                    raise _Broken(lost) from lost
            if isinstance(found, _Ranked):
                return found
            if vector is None or found.model != model:  # first read, or another model now
                model = found.model
                vector = self._embed(model, request.query)
        # The target kept changing: its vectors are compared with nothing.
        raise exceptions.ConnectionLost(
            f"{request.table}'s target changed {ATTEMPTS} times during the search: ask again"
        )

    def _attempt(
        self,
        conn: db.Connection,
        request: SearchRequest,
        model: str | None,
        vector: npt.NDArray[np.float32] | None,
    ) -> _Ranked | Target:
        """The ranking, on one lease; or the table's target as it is now, when the question
        was not embedded for it yet (`vector` None, another model) or the target changed
        under the ranking: the search embeds again if it must and asks once more."""
        at_once = self._rank_known(conn, request, model, vector)
        if at_once is not None:
            target, found, current = at_once
            if current:
                return found
        else:
            known = self.targets.known(request.table, request.column)
            _plans_for(conn, None if known is None else known[1].id)
            target = self.targets.find(conn, request.table, request.column, then=self.then)
            if vector is None or target.model != model:
                return target
            _plans_for(conn, target.id)
            ranked = self._rank(conn, target, request, vector)
            if ranked is not None and is_current(conn, target, last=True):
                return ranked
        return current_target(conn, target)  # changed under the ranking

    def _rank_known(
        self,
        conn: db.Connection,
        request: SearchRequest,
        model: str | None,
        vector: npt.NDArray[np.float32] | None,
    ) -> tuple[Target, _Ranked, bool] | None:
        """The ranking of the target this table meant last, sent between the statement that
        checks it is still that target and the one that reads its version again, in one
        exchange (a pipeline): on a pooled connection as it was given back (clean: no reset
        may come between them), for a search without a rerank stage, once the connection knows
        pgvector's types; with whether the version was still the target's after the ranking.
        None when this does not apply or the target changed: the search checks and ranks one
        statement at a time."""
        known = self.targets.known(request.table, request.column)
        if (
            known is None
            or vector is None
            or not (isinstance(conn, GuardedConnection) and conn.clean)
            or conn.adapters.types.get("halfvec") is None
        ):
            return None
        check, target = known
        if (
            target.model != model
            or target.problem(vector.shape[0]) is not None
            or rerank.plan(request, target) is not None
        ):
            return None
        ranking = _ranking(target, request, vector, request.k)
        drop_plans = conn.plans_for(target.id)
        checked = ranked = version = None
        try:
            with search_errors(), conn.pipeline():
                if drop_plans is not None:
                    conn.execute(drop_plans)
                checked = conn.execute(*check_statement(conn, request.table, request.column))
                ranked = conn.execute(ranking.query, ranking.params)
                # After the ranking, in the same exchange: a model change that swapped the
                # column meanwhile. The DISCARD the ranking calls for is the pool's, after
                # the answer (worker/retrieval/pool.py).
                version = conn.execute_as_left(*version_statement(target))
        except exceptions.DatabaseError:
            if _rows(checked) == check:  # the same target: the ranking's own error
                raise
            return None
        assert ranked is not None
        if _rows(checked) != check:
            return None
        found = _Ranked(ranking.results(ranked.fetchall()), None)
        return target, found, is_current_version(_rows(version), target)

    def _embed(self, model: str, query: str) -> npt.NDArray[np.float32]:
        vector: npt.NDArray[np.float32] = self.questions.embed(model, [query])[0]
        return vector

    def _rank(
        self,
        conn: db.Connection,
        target: Target,
        request: SearchRequest,
        vector: npt.NDArray[np.float32],
    ) -> _Ranked | None:
        """The first ranking on `conn`, with the reranker that will reorder it (loaded before
        the ranking runs: a search that cannot be reranked is answered at once); None when the
        target changed under the ranking (a model change's swap)."""
        if (problem := target.problem(vector.shape[0])) is not None:
            raise exceptions.TargetError(problem)
        stage = rerank.plan(request, target)
        reranker = None if stage is None else _reranker(conn, stage, self.load_reranker)
        k = request.k if stage is None else stage.depth
        try:
            results = rankings.run(conn, _ranking(target, request, vector, k))
        except exceptions.DatabaseError:
            if is_current(conn, target):
                raise
            return None
        return _Ranked(results, reranker)


def _ranking(
    target: Target,
    request: SearchRequest,
    vector: npt.NDArray[np.float32],
    k: int,
) -> rankings.Ranking:
    """By meaning, or hybrid where the request or the target says so. `fusion` given, a search
    that would not be hybrid (a target without full-text search, in mode "auto") is refused
    rather than run untuned."""
    mode, fusion = request.mode, request.fusion
    if mode == "hybrid" or (mode == "auto" and target.has_fulltext):
        return rankings.hybrid_ranking(
            target, request.query, vector, k, filter=request.filter, fusion=fusion
        )
    if fusion is not None:
        raise InvalidSearch(
            f"{target.name} has no full-text search: {', '.join(Fusion.names())} tune"
            " hybrid search only"
        )
    return rankings.by_vector_ranking(target, vector, k, request.filter)


def _plans_for(conn: db.Connection, target: int | None) -> None:
    """Drops the session's cached plans unless they were kept for `target`'s searches (None:
    a target not known yet): a plan someone's code built during another table's search never
    serves this one (queries.sql: session_discard_plans)."""
    if isinstance(conn, GuardedConnection) and (drop := conn.plans_for(target)):
        conn.execute(drop)


def _rows(cursor: Any) -> Any:
    """A pipelined statement's rows; None when it has none (it failed, or never ran)."""
    if cursor is None:
        return None
    try:
        return cursor.fetchall()
    except psycopg.Error:
        return None


def _reranker(conn: db.Connection, stage: rerank.RerankPlan, load: LoadReranker | None) -> Reranker:
    """The stage's reranker: a registered remote one (its registration as it is now), else
    the cross-encoder directory of that name."""
    if load is None:
        raise rerank.RerankerUnavailable("this search path has no rerank stage")
    registration = None
    try:
        registration = rerank.registration(conn, stage.model)
        return load(stage.model, registration)
    except exceptions.ModelNotFound as exc:
        # A name the request made up is the caller's to fix; one the table's set_rerank()
        # names and this worker lacks is the operator's, and may be served later: a 503.
        if stage.asked and registration is None:
            raise rerank.unknown(conn, stage.model) from None
        raise rerank.RerankerUnavailable(f"reranker {stage.model}: {exc}") from exc
    except exceptions.ModelError as exc:
        raise rerank.RerankerUnavailable(f"reranker {stage.model}: {exc}") from exc


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
