"""Search by meaning: the rows of a watched table nearest to a query, or for a chunked target
the documents whose best chunk is nearest, with that chunk (the retrieval step of a RAG app).

`embed-worker search` and `POST /search` both end here: `run()` resolves the table's target,
embeds the query with the target's model, and ranks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from psycopg import errors

from worker import db, exceptions
from worker.models.embedder import TextModel
from worker.pipeline import stores
from worker.pipeline import targets as targets_mod
from worker.pipeline.targets import Target

MAX_K = 100


@dataclass(frozen=True)
class Request:
    table: str
    query: str
    k: int = 5
    column: str | None = None

    @classmethod
    def parse(cls, body: Any) -> Request:
        """A request from a JSON body ({"table", "query", "k"?, "column"?}); ValueError if bad."""
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
        return cls(table, query, k, column)


def run(
    conn: db.Connection, load_model: Callable[[str], TextModel], request: Request
) -> list[dict[str, Any]]:
    """Ranked results: {"key", "similarity", "content"} per row (its vector in the row or in a
    side table), or per document of a chunked target {"key", "similarity", "seq", "chunk"} (its
    best chunk): the target's store ranks (worker/pipeline/stores/)."""
    target = find_target(conn, request.table, request.column)
    return ranked(conn, load_model, target, request.query, request.k)


def ranked(
    conn: db.Connection, load_model: Callable[[str], TextModel], target: Target, query: str, k: int
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
            results = stores.of(target).nearest(conn, target, vector, k)
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


def find_target(conn: db.Connection, table: str, column: str | None = None) -> Target:
    with db.translated():
        try:
            row = conn.execute("SELECT to_regclass(%s)::oid", (table,)).fetchone()
        except (errors.InvalidName, errors.SyntaxError, errors.FeatureNotSupported) as exc:
            # Not a name at all ('"', 'a.b.c.d', another database's): no such table either.
            raise exceptions.TargetError(f"no table {table!r}: {exc}") from None
        if row is None or row[0] is None:
            raise exceptions.TargetError(f"no table {table!r}")
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM embeddings.targets WHERE source = %s::oid"
                " AND (%s::name IS NULL OR embedding_column = %s::name) ORDER BY id",
                (row[0], column, column),
            )
        ]
    if not ids:
        hint = f"SELECT embeddings.watch('{table}', 'content_column');"
        raise exceptions.TargetError(f"{table} is not watched: {hint}")
    if len(ids) > 1:
        raise exceptions.ConfigError(f"{table} has several embedding columns: pass a column")
    return targets_mod.load(conn)[ids[0]]
