"""Which target a search of a table name means, and that target as it is now: one statement
each (the named query search_target), never the whole registry."""

from __future__ import annotations

from typing import Any

from psycopg import errors, sql
from psycopg.rows import dict_row

from worker import db, exceptions, queries
from worker.pipeline.targets import target_of
from worker.target import Target

# search_target's targets: load_targets narrowed to the table's (and column's).
_OF_THE_TABLE = sql.SQL(
    "t.source = source.oid"
    " AND (%(column)s::name IS NULL OR t.embedding_column = %(column)s::name)"
    " AND (%(target)s::integer IS NULL OR t.id = %(target)s::integer)"
)


def find_target(
    conn: db.Connection, table: str, column: str | None = None, *, then: str = ""
) -> Target:
    """The target of `table` (of its embedding column `column`, if it has several); `then`
    is added to the hint given for an unwatched table."""
    with db.translated():
        try:
            rows = _search_target(conn, {"table": table, "column": column, "target": None})
        except (errors.InvalidName, errors.SyntaxError, errors.FeatureNotSupported) as exc:
            # Not a name at all ('"', 'a.b.c.d', another database's): no such table either.
            raise exceptions.TargetError(f"no table {table!r}: {exc}") from None
    if not rows:
        raise exceptions.TargetError(f"no table {table!r}")
    found = [row for row in rows if row["id"] is not None]
    if not found:
        hint = f"SELECT embeddings.watch('{table}', 'content_column');{then}"
        raise exceptions.TargetError(f"{table} is not watched: {hint}")
    if len(found) > 1:
        raise exceptions.ConfigError(f"{table} has several embedding columns: pass a column")
    return target_of(found[0])


def current_target(conn: db.Connection, target: Target) -> Target:
    """`target` as registered now (its definition version moves with a model change)."""
    with db.translated():
        rows = _search_target(conn, {"table": None, "column": None, "target": target.id})
    found = [row for row in rows if row["id"] is not None]
    if not found:
        raise exceptions.TargetError(f"{target.name} is not watched any more")
    return target_of(found[0])


def is_current(conn: db.Connection, target: Target) -> bool:
    """Whether `target` is still the registered definition: one row read."""
    with db.translated():
        row = conn.execute(queries.get("search_target_version"), {"target": target.id}).fetchone()
    return row is not None and row[0] == target.version


def _search_target(conn: db.Connection, params: dict[str, Any]) -> list[dict[str, Any]]:
    query = queries.compose(
        "search_target", targets=queries.compose("load_targets", which=_OF_THE_TABLE)
    )
    return conn.cursor(row_factory=dict_row).execute(query, params).fetchall()
