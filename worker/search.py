"""Search by meaning: the rows of a watched table nearest to a query, or for a chunked target
the documents whose best chunk is nearest, with that chunk (the retrieval step of a RAG app).

`embed-worker search` and `POST /search` both end here: `run()` resolves the table's target,
embeds the query with the target's model, and ranks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pgvector import HalfVector
from psycopg import errors

from worker import db, exceptions, queries
from worker.models.embedder import TextModel
from worker.pipeline import targets as targets_mod
from worker.pipeline.targets import Target

MAX_K = 100
# "vector": by meaning only; "hybrid": fused with full-text search (the target needs it on:
# embeddings.enable_fts()); "auto": hybrid where the target has full-text search.
MODES = ("auto", "vector", "hybrid")


@dataclass(frozen=True)
class Request:
    table: str
    query: str
    k: int = 5
    column: str | None = None
    filter: dict[str, Any] | None = None
    mode: str = "auto"

    @classmethod
    def parse(cls, body: Any) -> Request:
        """A request from a JSON body ({"table", "query", "k"?, "column"?, "filter"?});
        ValueError if bad. The filter is a JSON object of column names (docs/http.md#search),
        checked against the table by embeddings.search(), never spliced into SQL."""
        if not isinstance(body, dict):
            raise ValueError('expected a JSON object with "table" and "query"')
        table, query, k = body.get("table"), body.get("query"), body.get("k", 5)
        column = body.get("column")
        # No NUL: Postgres text cannot hold one, so no table name does.
        if not isinstance(table, str) or not table or "\x00" in table:
            raise ValueError('"table" must be a table name')
        if not isinstance(query, str) or not query.strip():
            raise ValueError('"query" must be a non-empty string')
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise ValueError(f'"k" must be an integer from 1 to {MAX_K}')
        if column is not None and (not isinstance(column, str) or "\x00" in column):
            raise ValueError('"column" must be a column name')
        filter = body.get("filter")
        if filter is not None and not isinstance(filter, dict):
            raise ValueError('"filter" must be a JSON object of column names')
        mode = body.get("mode", "auto")
        if mode not in MODES:
            raise ValueError(f'"mode" must be one of {", ".join(MODES)}')
        return cls(table, query, k, column, filter, mode)


def run(
    conn: db.Connection, load_model: Callable[[str], TextModel], request: Request
) -> list[dict[str, Any]]:
    """Ranked results, one per row or, for a chunked target, per document (result())."""
    target = find_target(conn, request.table, request.column)
    return ranked(
        conn,
        load_model,
        target,
        request.query,
        request.k,
        filter=request.filter,
        mode=request.mode,
    )


def ranked(
    conn: db.Connection,
    load_model: Callable[[str], TextModel],
    target: Target,
    query: str,
    k: int,
    *,
    filter: dict[str, Any] | None = None,
    mode: str = "auto",
) -> list[dict[str, Any]]:
    """The query embedded with the model of the target's column at that moment, ranked. A
    model change that swapped the column meanwhile (the definition version moved) means once
    more, with the new model: a query is never compared with another model's vectors."""
    for _ in range(3):
        model = load_model(target.model)
        if (problem := target.problem(model.dim)) is not None:
            raise exceptions.TargetError(problem)
        vector = model.embed([query])[0]
        try:
            if mode == "hybrid" or (mode == "auto" and has_fulltext(conn, target)):
                results = hybrid(conn, target, query, vector, k, filter=filter)
            else:
                results = nearest(conn, target, vector, k, filter)
        except exceptions.DatabaseError:
            if _current(conn, target).version == target.version:
                raise
            target = _current(conn, target)  # the column changed under the query
            continue
        now = _current(conn, target)
        if now.version == target.version:
            return results
        target = now
    return results


def _current(conn: db.Connection, target: Target) -> Target:
    return targets_mod.load(conn)[target.id]


def find_target(
    conn: db.Connection, table: str, column: str | None = None, *, then: str = ""
) -> Target:
    """The target of `table` (of its embedding column `column`, if it has several); `then`
    is added to the hint given for an unwatched table."""
    with db.translated():
        try:
            row = conn.execute(queries.get("search_table"), {"table": table}).fetchone()
        except (errors.InvalidName, errors.SyntaxError, errors.FeatureNotSupported) as exc:
            # Not a name at all ('"', 'a.b.c.d', another database's): no such table either.
            raise exceptions.TargetError(f"no table {table!r}: {exc}") from None
        if row is None or row[0] is None:
            raise exceptions.TargetError(f"no table {table!r}")
        ids = [
            r[0]
            for r in conn.execute(
                queries.get("search_targets"), {"source": row[0], "column": column}
            )
        ]
    if not ids:
        hint = f"SELECT embeddings.watch('{table}', 'content_column');{then}"
        raise exceptions.TargetError(f"{table} is not watched: {hint}")
    if len(ids) > 1:
        raise exceptions.ConfigError(f"{table} has several embedding columns: pass a column")
    return targets_mod.load(conn)[ids[0]]


# SQLSTATEs of a search the caller got wrong (a filter naming no column, a bad comparison, a
# column type filters do not take) or may not make (no SELECT on the table): 400 and 403 over
# HTTP, not 500.
BAD_SEARCH = {"42703", "22023", "0A000", "22P02", "22003", "22007", "22008"}
DENIED = "42501"


def nearest(
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
    with _errors():
        rows = conn.execute(queries.get("search"), params).fetchall()
    return [
        result(key, distance, content, seq, vector_rank=rank)
        for rank, (key, distance, content, seq) in enumerate(rows, start=1)
    ]


def hybrid(
    conn: db.Connection,
    target: Target,
    query: str,
    vector: npt.NDArray[np.float32],
    k: int,
    *,
    filter: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """embeddings.hybrid_search(): the k documents best by reciprocal rank fusion of the
    vector ranking and the full-text ranking of `query` (sql/59_hybrid.sql)."""
    db.register_vector_types(conn)
    params = {
        "target": target.id,
        "text": query,
        "query": HalfVector(vector),
        "k": k,
        "filter": None if filter is None else json.dumps(filter),
        "column": target.embedding_column,
    }
    with _errors():
        rows = conn.execute(queries.get("hybrid_search"), params).fetchall()
    return [
        result(key, distance, content, seq, score=score, vector_rank=vr, text_rank=tr)
        for key, score, content, seq, distance, vr, tr in rows
    ]


def has_fulltext(conn: db.Connection, target: Target) -> bool:
    with db.translated():
        row = conn.execute(queries.get("has_fulltext"), {"target": target.id}).fetchone()
    return bool(row and row[0])


def result(
    key: Any,
    distance: float | None,
    content: str | None,
    seq: int | None,
    *,
    score: float | None = None,
    vector_rank: int | None = None,
    text_rank: int | None = None,
) -> dict[str, Any]:
    """One result (docs/http.md#search): the row's key as the table types it; its cosine
    `distance` to the query and `similarity` (1 - distance; both null for a hybrid result the
    vector ranking did not hold); `content` (the content column's text, or the best chunk's)
    and `seq` (the chunk's position from 0; null for a whole row); the hybrid `score`
    (reciprocal rank fusion; null for a vector search) and the result's place in each ranking
    (`vector_rank`, `text_rank`, from 1; null where it is missing)."""
    return {
        "key": key,
        "similarity": None if distance is None else 1 - float(distance),
        "distance": None if distance is None else float(distance),
        "content": content,
        "seq": seq,
        "score": score,
        "vector_rank": vector_rank,
        "text_rank": text_rank,
    }


class InvalidSearch(exceptions.ConfigError):
    """The search is wrong as asked (its filter, say): a 400."""


class SearchDenied(exceptions.ConfigError):
    """The searching role may not read the table: a 403."""


@contextmanager
def _errors() -> Iterator[None]:
    try:
        with db.translated():
            yield
    except exceptions.DatabaseError as exc:
        state = getattr(exc.__cause__, "sqlstate", None)
        if state in BAD_SEARCH:
            raise InvalidSearch(str(exc)) from exc
        if state == DENIED:
            raise SearchDenied(str(exc)) from exc
        raise
