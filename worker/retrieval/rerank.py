"""The rerank stage: the first ranking's top results reordered by a cross-encoder, which reads
the question with each result's text: a local one (worker/models/reranker.py), or a remote
rerank API registered in embeddings.rerankers (worker/models/remote/reranker.py), whose
registration each search reads on its own connection (registration()).

Which reranker, and how deep, comes from the request, else from the target's setting
(embeddings.set_rerank(), sql/57_rerank.sql); without either there is no stage. The first
ranking (by meaning or hybrid) is asked for `depth` results instead of k; the cross-encoder
scores them all, and the k best by its score are the answer, each with its `rerank_score`,
ties kept in the first ranking's order. The text read is what the result returns: the content
column's, or for a chunked target the document's best chunk.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import numpy as np
from psycopg.rows import dict_row

from worker import db, exceptions, queries
from worker.models.remote.rerank_spec import RerankerSpec
from worker.models.reranker import Reranker
from worker.retrieval.errors import InvalidSearch
from worker.retrieval.request import MAX_RERANK_DEPTH, SearchRequest
from worker.target import Target

# Without a depth: three times k, at least 20 (a cross-encoder call per result: 20 short
# passages take tens of milliseconds on two cores with a MiniLM-sized model).
DEPTH_PER_RESULT = 3
MIN_DEPTH = 20


class RerankerUnavailable(exceptions.ModelError):
    """The reranker a search needs cannot be loaded or run: a 503, the search is not answered
    with another order than the one asked for."""


class UnknownReranker(InvalidSearch):
    """The search names a reranker that is neither registered nor a cross-encoder directory:
    the caller's mistake (a 400), not the server's."""


@dataclass(frozen=True)
class RerankPlan:
    model: str
    depth: int  # results of the first ranking the reranker reads (at least k)
    asked: bool = False  # named by the request, not by the target's set_rerank()


def plan(request: SearchRequest, target: Target) -> RerankPlan | None:
    """The stage this search runs, or None."""
    if request.rerank is False:
        return None
    model = request.rerank if isinstance(request.rerank, str) else target.rerank_model
    if model is None:
        return None
    if target.content_function is not None and not target.chunked:
        raise InvalidSearch(
            f"{target.name} embeds a content function's output, which search does not return: "
            "there is no text to rerank (search it without rerank)"
        )
    depth = request.rerank_depth or target.rerank_depth
    if depth is None:
        depth = min(max(DEPTH_PER_RESULT * request.k, MIN_DEPTH), MAX_RERANK_DEPTH)
    return RerankPlan(model, max(depth, request.k), asked=isinstance(request.rerank, str))


def unknown(conn: db.Connection, name: str) -> UnknownReranker:
    """The error for a search naming reranker `name`, which nothing serves: the rerankers that
    are registered, and the one it nearly names."""
    return UnknownReranker(
        f"no reranker {name!r}: {_registered(conn, name)}, and no cross-encoder directory of that "
        f"name is where the worker looks for models (EMBED_MODEL_PATH); {_HOW_TO_GET_ONE}"
    )


def missing(conn: db.Connection, name: str, error: exceptions.ModelError) -> RerankerUnavailable:
    """The error for a search of a table whose reranker (set_rerank(): any name, the workers'
    directories are not known to the database) this worker cannot find: the rerankers that are
    registered, and how to get one."""
    return RerankerUnavailable(
        f"reranker {name} (the table's, set by set_rerank()): {error}; "
        f"{_registered(conn, name)}; {_HOW_TO_GET_ONE}"
    )


# What a reranker is and where it comes from (docs/rag.md, "Reranking").
_HOW_TO_GET_ONE = (
    "register a remote rerank API with embeddings.register_reranker(), or copy an exported ONNX "
    "cross-encoder directory (model.onnx, tokenizer.json) named so onto EMBED_MODEL_PATH (the "
    "model catalog has none to download)"
)


def _registered(conn: db.Connection, name: str) -> str:
    """Says that `name` is not registered, with the rerankers that are and the one it nearly
    names."""
    try:
        with db.translated():
            registered = [row[0] for row in conn.execute(queries.get("rerankers"), {"name": None})]
    except exceptions.DatabaseError:
        registered = []  # (a role that may not read the registry: no list to offer)
    close = difflib.get_close_matches(name, registered, n=1)
    return (
        "none is registered under that name"
        + (f" (did you mean {close[0]!r}?)" if close else "")
        + (
            f"; registered rerankers: {', '.join(registered)}"
            if registered
            else "; no reranker is registered (embeddings.register_reranker())"
        )
    )


def registration(conn: db.Connection, name: str) -> RerankerSpec | None:
    """The remote reranker registered as `name` (embeddings.rerankers), read now, as the
    searching role: None when there is none (a cross-encoder directory of that name, then).
    ModelError when it cannot be served: a kind this worker does not know, or a role that may
    not read the registry."""
    try:
        with db.translated():
            row = (
                conn.cursor(row_factory=dict_row)
                .execute(queries.get("rerankers"), {"name": name})
                .fetchone()
            )
    except exceptions.DatabaseError as exc:
        if not db.denied(exc):
            raise
        denied = True
    else:
        denied = False
    if denied:  # (raised out here: nothing chained to it)
        raise exceptions.ModelError(
            "this role may not read embeddings.rerankers, which every role may unless an "
            "administrator revoked it: GRANT SELECT ON embeddings.rerankers TO <the search role>"
        )
    if row is None:
        return None
    try:
        return RerankerSpec.from_row(row)
    except exceptions.ConfigError as exc:
        why = str(exc)
    raise exceptions.ProviderRefused(f"not served: {why}")


def reorder(
    results: list[dict[str, Any]], question: str, reranker: Reranker, k: int
) -> list[dict[str, Any]]:
    """The k results best by the reranker's score (ties in the order given), each with its
    `rerank_score`."""
    if not results:
        return []
    passages = [r["content"] or "" for r in results]
    try:
        scores = np.asarray(reranker.score(question, passages), dtype=np.float64)
    except exceptions.ModelError as exc:
        raise RerankerUnavailable(f"reranker {reranker.name}: {exc}") from exc
    if scores.shape != (len(results),) or not np.all(np.isfinite(scores)):
        raise RerankerUnavailable(
            f"reranker {reranker.name} gave {scores.shape[0]} scores for {len(results)} results"
            if scores.shape != (len(results),)
            else f"reranker {reranker.name} gave a score that is not a number"
        )
    order = sorted(range(len(results)), key=lambda i: (-scores[i], i))
    return [{**results[i], "rerank_score": float(scores[i])} for i in order[:k]]
