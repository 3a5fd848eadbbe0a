"""A search from its words to its results: the query embedded with the model of the target's
column, then ranked by meaning or, where the target has full-text search, hybrid."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from worker import db, exceptions
from worker.models.embedder import TextModel
from worker.models.remote.rerank_spec import RerankerSpec
from worker.models.reranker import Reranker
from worker.retrieval import rankings, rerank
from worker.retrieval.errors import InvalidSearch
from worker.retrieval.fusion import Fusion
from worker.retrieval.request import SearchRequest
from worker.retrieval.targets import current_target, find_target, is_current
from worker.target import Target

# A reranker by its name and its registration, if it is a remote one (LoadedRerankers.get).
LoadReranker = Callable[[str, RerankerSpec | None], Reranker]


def run(
    conn: db.Connection,
    load_model: Callable[[str], TextModel],
    request: SearchRequest,
    *,
    load_reranker: LoadReranker | None = None,
    then: str = "",
) -> list[dict[str, Any]]:
    """Ranked results, one per row or, for a chunked target, per document
    (results.search_result()), reranked where the request or the target says so
    (retrieval/rerank.py, with `load_reranker`): what `embed-worker search` and POST /search
    both run. `then` ends the hint given for an unwatched table."""
    target = find_target(conn, request.table, request.column, then=then)
    stage = rerank.plan(request, target)
    reranker = None if stage is None else _reranker(conn, stage, load_reranker)
    results = ranked(
        conn,
        load_model,
        target,
        request.query,
        request.k if stage is None else stage.depth,
        filter=request.filter,
        mode=request.mode,
        fusion=request.fusion,
    )
    if reranker is None:
        return results
    return rerank.reorder(results, request.query, reranker, request.k)


def _reranker(conn: db.Connection, stage: rerank.RerankPlan, load: LoadReranker | None) -> Reranker:
    """The stage's reranker, before the first ranking runs (a search that cannot be reranked
    is answered at once): a registered remote one (its registration as it is now), else the
    cross-encoder directory of that name."""
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
    """The query embedded with the model of the target's column at that moment, ranked. A
    model change that swapped the column meanwhile (the definition version moved) means once
    more, with the new model: a query is never compared with another model's vectors.
    `fusion` tunes the hybrid ranking; given, a search that would not be hybrid (a target
    without full-text search, in mode "auto") is refused rather than run untuned."""
    for _ in range(3):
        model = load_model(target.model)
        if (problem := target.problem(model.dim)) is not None:
            raise exceptions.TargetError(problem)
        vector = model.embed([query])[0]
        try:
            if mode == "hybrid" or (mode == "auto" and target.has_fulltext):
                results = rankings.hybrid(
                    conn, target, query, vector, k, filter=filter, fusion=fusion
                )
            elif fusion is not None:
                raise InvalidSearch(
                    f"{target.name} has no full-text search: {', '.join(Fusion.names())} tune"
                    " hybrid search only"
                )
            else:
                results = rankings.by_vector(conn, target, vector, k, filter)
        except exceptions.DatabaseError:
            if is_current(conn, target):
                raise
            target = current_target(conn, target)  # the column changed under the query
            continue
        if is_current(conn, target):
            return results
        target = current_target(conn, target)
    return results
