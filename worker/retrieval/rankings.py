"""The rankings, as the SQL functions make them (sql/58_search.sql, sql/59_hybrid.sql) with the
connection's rights: embeddings.search() by meaning, embeddings.hybrid_search() fused with
full-text search."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt
from pgvector import HalfVector

from worker import db, queries
from worker.retrieval.errors import search_errors
from worker.retrieval.fusion import Fusion
from worker.retrieval.results import search_result
from worker.target import Target


def by_vector(
    conn: db.Connection,
    target: Target,
    vector: npt.NDArray[np.float32],
    k: int,
    filter: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """embeddings.search(): the k rows nearest to `vector` (for a chunked target the k
    documents with the nearest chunks, each with its best one) among those matching `filter`,
    nearest first, as the connection's role may see them (row-level security included)."""
    db.register_vector_types(conn)
    params = {
        "target": target.id,
        "query": HalfVector(vector),
        "k": k,
        "filter": None if filter is None else json.dumps(filter),
        "column": target.embedding_column,
    }
    with search_errors():
        rows = conn.execute(queries.get("search"), params).fetchall()
    return [
        search_result(
            key,
            distance,
            content,
            seq,
            vector_rank=rank,
            offsets=(start, end),
            headings=headings,
            page=page,
        )
        for rank, (key, distance, content, seq, start, end, headings, page) in enumerate(
            rows, start=1
        )
    ]


def hybrid(
    conn: db.Connection,
    target: Target,
    query: str,
    vector: npt.NDArray[np.float32],
    k: int,
    *,
    filter: dict[str, Any] | None = None,
    fusion: Fusion | None = None,
) -> list[dict[str, Any]]:
    """embeddings.hybrid_search(): the k documents best by the fusion of the vector ranking
    and the full-text ranking of `query`, tuned by `fusion` (None, or a field of it None: the
    SQL function's defaults)."""
    db.register_vector_types(conn)
    fusion = fusion or Fusion()
    params = {
        "rrf_k": fusion.rrf_k,
        "vector_weight": fusion.vector_weight,
        "text_weight": fusion.text_weight,
        "depth": fusion.depth,
        "text_match": fusion.text_match,
        "fusion": fusion.fusion,
        "target": target.id,
        "text": query,
        "query": HalfVector(vector),
        "k": k,
        "filter": None if filter is None else json.dumps(filter),
        "column": target.embedding_column,
    }
    with search_errors():
        rows = conn.execute(queries.get("hybrid_search"), params).fetchall()
    return [
        search_result(
            key,
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
