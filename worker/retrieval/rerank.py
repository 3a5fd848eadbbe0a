"""The rerank stage: the first ranking's top results reordered by a cross-encoder, which reads
the question with each result's text (worker/models/reranker.py).

Which reranker, and how deep, comes from the request, else from the target's setting
(embeddings.set_rerank(), sql/57_rerank.sql); without either there is no stage. The first
ranking (by meaning or hybrid) is asked for `depth` results instead of k; the cross-encoder
scores them all, and the k best by its score are the answer, each with its `rerank_score`,
ties kept in the first ranking's order. The text read is what the result returns: the content
column's, or for a chunked target the document's best chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from worker import exceptions
from worker.models.reranker import Reranker
from worker.pipeline.targets import Target
from worker.retrieval.errors import InvalidSearch
from worker.retrieval.request import MAX_RERANK_DEPTH, SearchRequest

# Without a depth: three times k, at least 20 (a cross-encoder call per result: 20 short
# passages take tens of milliseconds on two cores with a MiniLM-sized model).
DEPTH_PER_RESULT = 3
MIN_DEPTH = 20


class RerankerUnavailable(exceptions.ModelError):
    """The reranker a search needs cannot be loaded or run: a 503, the search is not answered
    with another order than the one asked for."""


@dataclass(frozen=True)
class RerankPlan:
    model: str
    depth: int  # results of the first ranking the reranker reads (at least k)


def plan(request: SearchRequest, target: Target) -> RerankPlan | None:
    """The stage this search runs, or None."""
    if request.rerank is False:
        return None
    model = request.rerank if isinstance(request.rerank, str) else target.rerank_model
    if model is None:
        return None
    if target.content_function is not None and target.chunk_table is None:
        raise InvalidSearch(
            f"{target.name} embeds a content function's output, which search does not return: "
            "there is no text to rerank (search it without rerank)"
        )
    depth = request.rerank_depth or target.rerank_depth
    if depth is None:
        depth = min(max(DEPTH_PER_RESULT * request.k, MIN_DEPTH), MAX_RERANK_DEPTH)
    return RerankPlan(model, max(depth, request.k))


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
