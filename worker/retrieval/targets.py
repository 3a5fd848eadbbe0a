"""Which target a search of a table name means, and that target as it is now."""

from __future__ import annotations

from psycopg import errors

from worker import db, exceptions, queries
from worker.pipeline import targets as targets_mod
from worker.pipeline.targets import Target


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


def current_target(conn: db.Connection, target: Target) -> Target:
    """`target` as registered now (its definition version moves with a model change)."""
    return targets_mod.load(conn)[target.id]


def is_current(conn: db.Connection, target: Target) -> bool:
    """Whether `target` is still the registered definition: one row read, not the registry
    (current_target() reads every target, and their problems, from the catalog)."""
    with db.translated():
        row = conn.execute(queries.get("search_target_version"), {"target": target.id}).fetchone()
    return row is not None and row[0] == target.version
