"""Tables whose HNSW index watch() deferred (sql/62_backfill.sql): the planner estimated them at
more than embeddings.index_defer_rows() rows when they were watched."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.support.fetch import fetch_value

Conn = psycopg.Connection[Any]


def deferred_table(conn: Conn, table: str, model: str, *, kept_rows: int = 300) -> int:
    """`table` (id bigint, body text), watched with `model` while it held more rows than
    index_defer_rows(), so its index is deferred; then all but its first `kept_rows` rows are
    deleted (a short drain, even for a real model). Returns the target id."""
    rows = fetch_value(conn, "SELECT embeddings.index_defer_rows()")
    conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, body text)")
    conn.execute(
        f"INSERT INTO {table} SELECT i, 'doc ' || i FROM generate_series(1, %s) i", (rows + 1000,)
    )
    conn.execute(f"ANALYZE {table}")
    target = fetch_value(conn, "SELECT embeddings.watch(%s, 'body', model => %s)", (table, model))
    conn.execute(f"DELETE FROM {table} WHERE id > %s", (kept_rows,))
    return int(target)


def hnsw_indexes(conn: Conn, table: str) -> list[tuple[str, bool]]:
    """The HNSW indexes on `table`: (name, valid)."""
    return conn.execute(
        "SELECT ic.relname, i.indisvalid FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid"
        " JOIN pg_am am ON am.oid = ic.relam WHERE i.indrelid = %s::regclass AND am.amname = 'hnsw'"
        " ORDER BY ic.relname",
        (table,),
    ).fetchall()


def hnsw_index_names(conn: Conn, table: str) -> dict[str, str]:
    """The HNSW indexes of `table`, by column: column name -> index name."""
    return dict(
        conn.execute(
            "SELECT a.attname, c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_am am ON am.oid = c.relam AND am.amname = 'hnsw'"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
            " WHERE i.indrelid = %s::regclass",
            (table,),
        ).fetchall()
    )


def build_waits(conn: Conn, table: str) -> bool:
    """Whether a CREATE INDEX CONCURRENTLY on `table` (in schema public) waits for a lock."""
    return bool(
        fetch_value(
            conn,
            "SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query ~* ('CREATE INDEX CONCURRENTLY .* ON public\\.' || %s)",
            (table,),
        )
    )


def deferred_count(conn: Conn) -> int:
    """The indexes still deferred (embeddings.deferred_indexes): 0 once every one is built."""
    return int(fetch_value(conn, "SELECT count(*) FROM embeddings.deferred_indexes"))


def deferred_index_name(conn: Conn, table: str) -> str:
    """The name of the deferred index of `table`'s target (its column `embedding`):
    `<table>_embedding_<target id>_hnsw` for a short name."""
    return str(
        fetch_value(
            conn,
            "SELECT embeddings_internal.deferred_index_name(t) FROM embeddings.targets t"
            " WHERE t.source = %s::regclass",
            (table,),
        )
    )
