"""A BEIR corpus into Postgres the way a user would put it there: a table of documents
`(id text PRIMARY KEY, title text, body text)`, watched through a content function that joins
the title and the body, with full-text search on; then one `embed-worker run --once` embeds
it (its wall time, model load included, is the embed rate).

    CREATE FUNCTION beir_content(d beir_documents) RETURNS text
        LANGUAGE sql IMMUTABLE AS $$ SELECT d.title || ' ' || d.body $$;
    SELECT embeddings.watch('beir_documents', 'beir_content', model => ..., fts => 'english');

With `fts_title_weight` among the watch options, the content function is
`d.title || chr(31) || d.body`: full-text fields, the title weighted (sql/59_hybrid.sql).

With `chunk_tokens`, the target is chunked (a vector per chunk, `<table>_chunks`): a
document's rank then comes from its best chunk, by meaning and by full text alike.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench import worker_process
from bench.beir.dataset import Dataset

TABLE = "beir_documents"
CONTENT_FUNCTION = "beir_content"
FTS_CONFIG = "english"


@dataclass(frozen=True)
class Embedded:
    documents: int
    chunks: int | None  # a chunked target's chunks
    wall_s: float  # `embed-worker run --once`, process start and model load included
    cpu_s: float

    @property
    def docs_per_s(self) -> float:
        return self.documents / self.wall_s if self.wall_s > 0 else 0.0


def create(
    conn: psycopg.Connection[Any],
    dataset: Dataset,
    *,
    model: str,
    chunk_tokens: int | None = None,
    watch_options: Mapping[str, Any] | None = None,
    fields: bool = False,
) -> None:
    """The table, its rows and its watch (the rows queued for the worker); with `fields`, a
    content function that keeps the title apart for full-text search (weigh_title())."""
    table, function = sql.Identifier(TABLE), sql.Identifier(CONTENT_FUNCTION)
    options: dict[str, Any] = {"model": model, "fts": FTS_CONFIG, **(watch_options or {})}
    # Fields (`--watch fts_title_weight=W`, `--title-weights`): the title and the body apart, as
    # full-text search reads them; the vector embeds `title body` all the same.
    fielded = fields or options.get("fts_title_weight") is not None
    separator = "chr(31)" if fielded else "' '"

    conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(table))
    conn.execute(
        sql.SQL(
            "CREATE TABLE {} (id text PRIMARY KEY, title text NOT NULL, body text NOT NULL)"
        ).format(table)
    )
    conn.execute(
        sql.SQL(
            "CREATE FUNCTION {function}(d {table}) RETURNS text LANGUAGE sql IMMUTABLE"
            " AS $$ SELECT d.title || {separator} || d.body $$"
        ).format(function=function, table=table, separator=sql.SQL(separator))
    )
    with (
        conn.cursor() as cur,
        cur.copy(sql.SQL("COPY {} (id, title, body) FROM STDIN").format(table)) as copy,
    ):
        for document in dataset.documents:
            copy.write_row((document.id, document.title, document.text))
    if chunk_tokens is not None:
        options["chunk_tokens"] = chunk_tokens
    named = sql.SQL(", ").join(
        sql.SQL("{} => {}").format(sql.Identifier(name), sql.Literal(value))
        for name, value in options.items()
    )
    conn.execute(
        sql.SQL("SELECT embeddings.watch({}, {}, {})").format(
            sql.Literal(TABLE), sql.Literal(CONTENT_FUNCTION), named
        )
    )


def weigh_title(conn: psycopg.Connection[Any], weight: float) -> None:
    """Full-text search again with the title's words weighted `weight` (the vectors kept)."""
    conn.execute(
        "SELECT embeddings.enable_fts(%s, %s, title_weight => %s)", (TABLE, FTS_CONFIG, weight)
    )
    conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(TABLE)))


def embed(dsn: str, model: str, model_path: str, **settings: str | int) -> Embedded:
    """Runs `embed-worker run --once` until the queue is drained; every document must then have
    its vector (or its chunks), and the table its HNSW index; VACUUM ANALYZE as autovacuum
    would, at once: BM25's N is the table's reltuples (sql/59_bm25.sql), which an autovacuum
    during the rankings would otherwise set again from its own estimate (3,718 rows against
    NFCorpus's 3,633 once, moving figures in the fourth decimal)."""
    env = worker_process.worker_env(dsn, model, Path(model_path), **settings)
    started = time.perf_counter()
    process = worker_process.start(env, "--once", "--no-progress")
    try:
        cost = worker_process.wait(process, started)
    except BaseException:  # (SIGTERM or Ctrl-C: the worker must not outlive its database)
        process.terminate()
        process.wait(timeout=60)
        raise
    if cost.returncode != 0:
        raise RuntimeError(f"embed-worker run --once exited {cost.returncode}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        target = conn.execute(
            "SELECT id, chunk_table::text FROM embeddings.targets WHERE source = %s::regclass",
            (TABLE,),
        ).fetchone()
        assert target is not None
        failed = conn.execute("SELECT count(*) FROM embeddings.failures").fetchone()
        if failed and failed[0]:
            raise RuntimeError(f"{failed[0]} documents failed to embed: see embeddings.failures")
        chunk_table = target[1]
        documents = _count(conn, TABLE, None)
        if chunk_table is None:
            embedded = _count(conn, TABLE, "embedding IS NOT NULL")
            chunks = None
        else:
            embedded = _count(conn, chunk_table, None, distinct="id")
            chunks = _count(conn, chunk_table, None)
        if embedded != documents:
            raise RuntimeError(f"only {embedded} of {documents} documents have vectors")
        vectors = chunk_table or TABLE
        indexed = conn.execute(
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_am am ON am.oid = c.relam WHERE i.indrelid = %s::regclass"
            " AND am.amname = 'hnsw' AND i.indisvalid",
            (vectors,),
        ).fetchone()
        if not indexed or not indexed[0]:
            raise RuntimeError(f"{vectors} has no valid HNSW index after the worker's run")
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(TABLE)))
        if chunk_table is not None:
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(chunk_table)))
    return Embedded(documents, chunks, cost.wall_s, cost.cpu_s)


def _count(
    conn: psycopg.Connection[Any], table: str, where: str | None, distinct: str | None = None
) -> int:
    counted = (
        sql.SQL("count(DISTINCT {})").format(sql.Identifier(distinct))
        if distinct
        else sql.SQL("count(*)")
    )
    statement = sql.SQL("SELECT {} FROM {}").format(counted, sql.Identifier(table))
    if where:
        statement = sql.SQL("{} WHERE {}").format(statement, sql.SQL(where))
    row = conn.execute(statement).fetchone()
    return int(row[0]) if row else 0
