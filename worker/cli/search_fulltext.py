"""doctor's check of full-text search: a target whose `fts_config` is set searches its store's
tsvector column (hybrid search, BM25), so a store without that column fails every such search
with an undefined column, a 500 (0.3.0 left a chunk table that `chunk_table =>` moved a target
to without it). Said here, with the statement that makes the column again."""

from __future__ import annotations

import psycopg

from worker import db, queries
from worker.cli.findings import Finding

CHECK = "full-text search"


def findings(conn: db.Connection) -> list[Finding]:
    """The targets whose store lacks their full-text column (conn: a database with the schema
    installed)."""
    try:
        with conn.transaction():
            rows = conn.execute(queries.get("fulltext_columns_missing")).fetchall()
    except psycopg.Error:
        return []  # the registry unreadable: the status check said so already
    return [
        Finding(
            "FAIL",
            CHECK,
            f"{source}'s target has full-text search ({config}), but its store {store} has no "
            f"column {column}: its hybrid and BM25 searches fail",
            f"as the table's owner: {statement} (it makes the column and its index again)",
        )
        for source, config, store, column, statement in rows
    ]
