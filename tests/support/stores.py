"""Where a target's vectors live, for tests that run once per store (watch(..., store => ...)):
in the row (a column of the watched table) or in a side table keyed like it (sql/56_side.sql).

Tests read a target's vectors through `vectors()`: the watched table itself for the row store,
the table left-joined to its side table for the side store, so that `SELECT id, body, embedding
FROM <vectors>` reads the same way for both, and a side row whose row is gone never shows.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

Conn = psycopg.Connection[Any]

STORES = ("row", "side")


def vectors(conn: Conn, store: str, table: sql.Composable | str = "docs") -> sql.Composable:
    """The relation holding `table`'s rows with their vectors (aliased `vectors` for the side
    store). `table`: the watched table's name as SQL (an identifier or text)."""
    source = sql.SQL(table) if isinstance(table, str) else table
    if store == "row":
        return source
    row = conn.execute(
        "SELECT side_table::text, key_columns::text[] FROM embeddings.targets"
        " WHERE side_table IS NOT NULL ORDER BY id LIMIT 1"
    ).fetchone()
    assert row is not None, "no side-table target"
    side, keys = row
    return sql.SQL("(SELECT * FROM {} LEFT JOIN {} USING ({})) AS vectors").format(
        source, sql.SQL(side), sql.SQL(", ").join(sql.Identifier(k) for k in keys)
    )


def vector_table(conn: Conn, store: str, table: str = "docs") -> str:
    """The table that has the embedding column (its name as text)."""
    if store == "row":
        return table
    row = conn.execute(
        "SELECT side_table::text FROM embeddings.targets WHERE side_table IS NOT NULL"
        " ORDER BY id LIMIT 1"
    ).fetchone()
    assert row is not None, "no side-table target"
    return str(row[0])
