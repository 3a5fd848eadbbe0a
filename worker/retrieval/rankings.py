"""The rankings, as the SQL functions make them (sql/58_search.sql, sql/59_hybrid.sql) with the
connection's rights: embeddings.search() by meaning, embeddings.hybrid_search() fused with
full-text search."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pgvector import HalfVector

from worker import db, queries
from worker.retrieval.errors import search_errors
from worker.retrieval.fusion import Fusion
from worker.retrieval.results import search_key, search_result
from worker.target import Target


@dataclass(frozen=True)
class Ranking:
    """One ranking's statement, and how its rows become results: run by run(), or sent with
    other statements in one exchange (worker/retrieval/search.py)."""

    query: str
    params: dict[str, Any]
    hybrid: bool
    key_types: tuple[str, ...]  # the target's (Target.key_types): how its keys are typed

    def results(self, rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
        if not self.hybrid:
            # A vector ranking's rows as a hybrid ranking's: no score or text rank, and the
            # vector rank their place.
            rows = [
                (key, None, content, seq, distance, rank, None, start, end, headings, page)
                for rank, (key, distance, content, seq, start, end, headings, page) in enumerate(
                    rows, start=1
                )
            ]
        return [
            search_result(
                search_key(key, self.key_types),
                distance,
                content,
                seq,
                score=score,
                vector_rank=vr,
                text_rank=tr,
                offsets=(start, end),
                headings=headings,
                page=page,
            )
            for key, score, content, seq, distance, vr, tr, start, end, headings, page in rows
        ]


def run(conn: db.Connection, ranking: Ranking) -> list[dict[str, Any]]:
    """`ranking`'s results, on `conn`."""
    db.register_vector_types(conn)
    with search_errors():
        rows = conn.execute(ranking.query, ranking.params).fetchall()
    return ranking.results(rows)


def by_vector_ranking(
    target: Target,
    vector: npt.NDArray[np.float32],
    k: int,
    filter: dict[str, Any] | None = None,
) -> Ranking:
    """embeddings.search(): the k rows nearest to `vector` (for a chunked target the k
    documents with the nearest chunks, each with its best one) among those matching `filter`,
    nearest first, as the connection's role may see them (row-level security included)."""
    params = {
        "source": target.source,
        "query": HalfVector(vector),
        "k": k,
        "filter": None if filter is None else json.dumps(filter),
        "column": target.embedding_column,
    }
    return Ranking(queries.get("search"), params, hybrid=False, key_types=target.key_types)


def hybrid_ranking(
    target: Target,
    query: str,
    vector: npt.NDArray[np.float32],
    k: int,
    *,
    filter: dict[str, Any] | None = None,
    fusion: Fusion | None = None,
) -> Ranking:
    """embeddings.hybrid_search(): the k documents best by the fusion of the vector ranking
    and the full-text ranking of `query`, tuned by `fusion` (None, or a field of it None: the
    SQL function's defaults)."""
    fusion = fusion or Fusion()
    params = {
        "rrf_k": fusion.rank_constant,
        "vector_weight": fusion.vector_weight,
        "text_weight": fusion.text_weight,
        "depth": fusion.depth,
        "text_match": fusion.text_match,
        "fusion": fusion.fusion,
        "source": target.source,
        "text": query,
        "query": HalfVector(vector),
        "k": k,
        "filter": None if filter is None else json.dumps(filter),
        "column": target.embedding_column,
    }
    return Ranking(queries.get("hybrid_search"), params, hybrid=True, key_types=target.key_types)
