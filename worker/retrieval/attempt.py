"""One attempt of a search on one leased connection (worker/retrieval/search.py leases it and
asks again when a model change overtook the attempt): for a table whose target is known, the
check that it is still that target, the ranking and the read of its version, in one exchange (a
pipeline); else the target read, the rerank stage's registration and the ranking one statement
at a time. The answer, or the table's target as it is now for the search to embed with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from worker import db, exceptions
from worker.models.remote.rerank_spec import RerankerSpec
from worker.models.reranker import Reranker
from worker.retrieval import rankings, rerank
from worker.retrieval.errors import InvalidSearch, search_errors
from worker.retrieval.fusion import Fusion
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


@dataclass
class Ranked:
    """The first ranking's results, and the reranker that will reorder them (None: none)."""

    results: list[dict[str, Any]]
    reranker: Reranker | None


def attempt(
    conn: db.Connection,
    request: SearchRequest,
    model: str | None,
    vector: npt.NDArray[np.float32] | None,
    *,
    targets: KnownTargets,
    load_reranker: LoadReranker | None = None,
    then: str = "",
) -> Ranked | Target:
    """The ranking, on one lease; or the table's target as it is now, when the question
    was not embedded for it yet (`vector` None, another model) or the target changed
    under the ranking: the search embeds again if it must and asks once more."""
    at_once = _rank_known(conn, targets, request, model, vector)
    if at_once is not None:
        target, found, current = at_once
        if current:
            return found
    else:
        known = targets.known(request.table, request.column)
        _plans_for(conn, None if known is None else known[1].id)
        target = targets.find(conn, request.table, request.column, then=then)
        if vector is None or target.model != model:
            return target
        _plans_for(conn, target.id)
        ranked = _rank(conn, target, request, vector, load_reranker)
        if ranked is not None and is_current(conn, target, last=True):
            return ranked
    return current_target(conn, target)  # changed under the ranking


def _rank_known(
    conn: db.Connection,
    targets: KnownTargets,
    request: SearchRequest,
    model: str | None,
    vector: npt.NDArray[np.float32] | None,
) -> tuple[Target, Ranked, bool] | None:
    """The ranking of the target this table meant last, sent between the statement that
    checks it is still that target and the one that reads its version again, in one
    exchange (a pipeline): on a pooled connection as it was given back (clean: no reset
    may come between them), for a search without a rerank stage, once the connection knows
    pgvector's types; with whether the version was still the target's after the ranking.
    None when this does not apply or the target changed: the search checks and ranks one
    statement at a time."""
    known = targets.known(request.table, request.column)
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

    def send() -> None:
        nonlocal checked, ranked, version
        if drop_plans is not None:
            conn.execute(drop_plans)
        checked = conn.execute(*check_statement(conn, request.table, request.column))
        ranked = conn.execute(ranking.query, ranking.params)
        # After the ranking, in the same exchange: a model change that swapped the
        # column meanwhile. The DISCARD the ranking calls for is the pool's, after
        # the answer (worker/retrieval/pool.py).
        version = conn.execute_as_left(*version_statement(target))

    failure = _pipelined(conn, send)
    if _rows(checked) != check:
        # Another target, or this one changed (a column dropped: its problem recorded):
        # checked and ranked one statement at a time, as a first search of it would be.
        return None
    if failure is not None:  # the same target: the ranking's own error, or its problem
        try:
            with search_errors():
                raise failure
        except (exceptions.DatabaseError, exceptions.ConfigError):
            _refuse_if_unservable(conn, target, vector)
            raise
    assert ranked is not None
    found = Ranked(ranking.results(ranked.fetchall()), None)
    return target, found, is_current_version(_rows(version), target)


def _rank(
    conn: db.Connection,
    target: Target,
    request: SearchRequest,
    vector: npt.NDArray[np.float32],
    load_reranker: LoadReranker | None,
) -> Ranked | None:
    """The first ranking on `conn`, with the reranker that will reorder it (loaded before
    the ranking runs: a search that cannot be reranked is answered at once); None when the
    target changed under the ranking (a model change's swap)."""
    if (problem := target.problem(vector.shape[0])) is not None:
        raise exceptions.TargetError(problem)
    stage = rerank.plan(request, target)
    reranker = None if stage is None else _reranker(conn, stage, load_reranker)
    k = request.k if stage is None else stage.depth
    ranking = _ranking(target, request, vector, k)
    try:
        results = rankings.run(conn, ranking)
    except (exceptions.DatabaseError, exceptions.ConfigError):  # ConfigError: InvalidSearch
        if is_current(conn, target):
            _refuse_if_unservable(conn, target, vector)
            raise
        return None
    return Ranked(results, reranker)


def _refuse_if_unservable(
    conn: db.Connection, target: Target, vector: npt.NDArray[np.float32]
) -> None:
    """After `target`'s ranking failed: its problem (a TargetError), if it has one as it is
    registered now, which is what a first search of its table answers (a content column
    dropped without an event trigger to record it is seen by the registration's read, not
    by the cheap check of a known target); else nothing, and the ranking's error stands."""
    if (problem := current_target(conn, target).problem(vector.shape[0])) is not None:
        raise exceptions.TargetError(problem)


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


def _pipelined(conn: db.Connection, send: Callable[[], None]) -> psycopg.Error | None:
    """Sends `send()`'s statements in one pipeline; the first error one of them raised, or
    None. The pipeline is ended as a pipeline that ran well is: an error let out of its block
    has psycopg log, at WARNING, the "pipeline aborted" of the statements after the failed one
    (a refused filter, a caller's mistake, read as database trouble in the worker's log)."""
    failure: psycopg.Error | None = None
    try:
        with conn.pipeline():
            try:
                send()
            except psycopg.Error as exc:
                failure = exc
    except psycopg.Error as exc:  # raised by the pipeline's end: its sync, or a result
        if failure is None:
            failure = exc
    return failure


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
        if registration is None:
            raise rerank.missing(conn, stage.model, exc) from exc
        raise rerank.RerankerUnavailable(f"reranker {stage.model}: {exc}") from exc
    except exceptions.ModelError as exc:
        raise rerank.RerankerUnavailable(f"reranker {stage.model}: {exc}") from exc
