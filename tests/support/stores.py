"""Where a target's vectors live, for tests that run once per store (watch(..., store => ...)):
in the row (a column of the watched table) or in a side table keyed like it (sql/56_side.sql);
ALL_STORES adds chunked targets (sql/55_chunks.sql: a chunk table keyed like it), for tests of
what every target does alike (every way rows arrive or leave).

Tests read a target's vectors through `vectors()`: the watched table itself for the row store,
the table left-joined to its side table for the side store, so that `SELECT id, body, embedding
FROM <vectors>` reads the same way for both, and a side row whose row is gone never shows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import psycopg
from psycopg import sql

from tests.support.fetch import fetch_row, fetch_value
from tests.support.jobs import queued_keys

Conn = psycopg.Connection[Any]

STORES = ("row", "side")
ALL_STORES = (*STORES, "chunks")

# watch()'s arguments that choose each store.
WATCH_ARGS = {"row": "", "side": ", store => 'side'", "chunks": ", chunk_tokens => 64"}


def watch(conn: Conn, store: str, model: str, table: str = "docs", content: str = "body") -> int:
    """Watches `table` with its vectors in `store`; returns the target id."""
    row = conn.execute(
        f"SELECT embeddings.watch(%s, %s, model => %s{WATCH_ARGS[store]})", (table, content, model)
    ).fetchone()
    assert row is not None
    return int(row[0])


def embedded(conn: Conn, store: str, table: str = "docs", key: str = "id") -> dict[Any, bool]:
    """Each row's key: whether it has its vector (a chunked target's: at least one chunk). Rows
    of the side or chunk table whose row is gone are not shown."""
    target = conn.execute(
        "SELECT store_table::text FROM embeddings.targets"
        " WHERE source = %s::regclass ORDER BY id LIMIT 1",
        (table,),
    ).fetchone()
    assert target is not None, f"{table} is not watched"
    k = sql.Identifier(key)
    if store == "row":
        query = sql.SQL("SELECT {k}, embedding IS NOT NULL FROM {t}").format(
            k=k, t=sql.Identifier(table)
        )
    else:
        query = sql.SQL(
            "SELECT t.{k}, EXISTS (SELECT FROM {s} x WHERE x.{k} = t.{k} AND x.embedding IS NOT NULL)"
            " FROM {t} t"
        ).format(k=k, s=sql.SQL(target[0]), t=sql.Identifier(table))
    return dict(conn.execute(query).fetchall())


def vectors(conn: Conn, store: str, table: sql.Composable | str = "docs") -> sql.Composable:
    """The relation holding `table`'s rows with their vectors (aliased `vectors` for the side
    store). `table`: the watched table's name as SQL (an identifier or text)."""
    source = sql.SQL(table) if isinstance(table, str) else table
    if store == "row":
        return source
    side, keys = fetch_row(
        conn,
        "SELECT store_table::text, key_columns::text[] FROM embeddings.targets"
        " WHERE store_kind = 'side' ORDER BY id LIMIT 1",
    )
    return sql.SQL("(SELECT * FROM {} LEFT JOIN {} USING ({})) AS vectors").format(
        source, sql.SQL(side), sql.SQL(", ").join(sql.Identifier(k) for k in keys)
    )


def vector_table(conn: Conn, store: str, table: str = "docs") -> str:
    """The table that has the embedding column (its name as text)."""
    if store == "row":
        return table
    return str(
        fetch_value(
            conn,
            "SELECT store_table::text FROM embeddings.targets WHERE store_kind = 'side'"
            " ORDER BY id LIMIT 1",
        )
    )


def watch_with(conn: Conn, table: str = "docs", content: str = "body", **options: Any) -> int:
    """watch(table, content, name => value, ...) with `options` as its named arguments; returns
    the target id."""
    named = "".join(f", {name} => %({name})s" for name in options)
    row = conn.execute(
        f"SELECT embeddings.watch(%(table)s, %(content)s{named})",
        {**options, "table": table, "content": content},
    ).fetchone()
    assert row is not None
    return int(row[0])


def columns(conn: Conn, table: str) -> list[tuple[str, str, bool]]:
    """`table`'s columns in order: name, type (format_type) and whether NOT NULL."""
    return [
        (r[0], r[1], r[2])
        for r in conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (table,),
        )
    ]


def constraints(conn: Conn, table: str) -> dict[str, str]:
    """`table`'s constraints: their definition by kind (pg_constraint.contype)."""
    return dict(
        conn.execute(
            "SELECT contype, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = %s::regclass",
            (table,),
        ).fetchall()
    )


def texts_table(
    conn: Conn,
    texts: Mapping[Any, str | None],
    columns: str = "id bigint PRIMARY KEY, body text",
    table: str = "docs",
) -> None:
    """`table` of `columns` (among them `id` and `body`), holding `texts` (id: body)."""
    conn.execute(f"CREATE TABLE {table} ({columns})")
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {table} (id, body) VALUES (%s, %s)", list(texts.items()))


def watched_table(conn: Conn, model: str, rows: str, table: str = "docs") -> int:
    """`table` (id int, body text) holding `rows` (SQL: a VALUES list or a query), watched with
    `model` (its vectors in the row); returns the target id."""
    conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, body text)")
    conn.execute(f"INSERT INTO {table} {rows}")
    return watch(conn, "row", model, table)


def watch_poisoned(conn: Conn, model: str, columns: str, rows: str) -> None:
    """`docs` of `columns` (SQL, a `body` text among them) holding `rows` (SQL VALUES), watched
    through a content function that raises `no <body>` for a body starting with 'poison': rows
    the worker dead-letters until they are cured."""
    conn.execute(f"CREATE TABLE docs ({columns})")
    conn.execute(
        "CREATE FUNCTION picky(d docs) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$"
        " BEGIN IF d.body LIKE 'poison%' THEN RAISE EXCEPTION 'no %', d.body; END IF;"
        " RETURN d.body; END $$"
    )
    conn.execute("SELECT embeddings.watch('docs', 'picky', model => %s)", (model,))
    conn.execute(f"INSERT INTO docs VALUES {rows}")


def watch_absent_model(conn: Conn, rows: str = "(1, 'hello')") -> None:
    """`docs` (id int, body text) holding `rows` (SQL VALUES), watched with 'absent-model': a
    model the registry knows and no worker has, so its jobs wait."""
    conn.execute(
        "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
        " VALUES ('absent-model', 384, 512, 'mean')"
    )
    watched_table(conn, "absent-model", f"VALUES {rows}")


def assert_sweep_restores(
    conn: Conn, run_once: Callable[..., Any], target: int, store_table: str, where: str, key: Any
) -> None:
    """Once the worker ran, `store_table` loses one row's vectors (`where`: SQL naming them):
    embeddings.sweep() queues that row's key alone, and the worker stores its vectors again."""
    run_once()
    conn.execute(f"DELETE FROM {store_table} WHERE {where}")
    assert conn.execute("SELECT embeddings.sweep()").fetchone() == (1,)
    assert queued_keys(conn, target) == [key]
    run_once()
    assert conn.execute(f"SELECT count(*) FROM {store_table} WHERE {where}").fetchone() != (0,)
