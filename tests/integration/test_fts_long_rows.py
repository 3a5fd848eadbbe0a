"""A long row of a target with full-text search (sql/59_hybrid.sql: fts_sql()): its tsvector
reads the content's first 1,048,576 characters, as the worker's store writes it, the fill of
enable_fts() and a side table's alike."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.support import stores
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]

LIMIT = 1_048_576


def long_body(marker: str) -> str:
    """Text of ordinary words up to the limit, then `marker`: a word only past it."""
    words = " ".join(f"word{i % 5000}" for i in range(LIMIT // 8))
    return words[:LIMIT].ljust(LIMIT) + f" {marker}"


def holds(conn: Conn, store: str, word: str) -> bool:
    table = stores.vector_table(conn, store)
    row = conn.execute(
        f"SELECT bool_or(embedding_fts @@ to_tsquery('english', %s)) FROM {table}", (word,)
    ).fetchone()
    assert row is not None
    return bool(row[0])


@pytest.mark.parametrize("store", stores.STORES)
def test_a_long_row_s_full_text_reads_its_first_mebibyte(
    conn: Conn, run_once: Callable[..., Worker], minilm: str, store: str
) -> None:
    """A row of several megabytes failed every attempt on a target with full-text search: the
    store's UPDATE, bounded as the table owner's triggers are (it fires them), spent over a
    second in to_tsvector() of the whole row, and its error named the owner's code. Its words
    past the first 1,048,576 characters are in neither its vector nor its tsvector now; the
    row is embedded, and the words before are found."""
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    stores.watch(conn, store, minilm)
    conn.execute("SELECT embeddings.enable_fts('docs', 'english')")
    conn.execute(
        "INSERT INTO docs VALUES (1, %s), (2, 'a short row saying farewell')",
        (long_body("zanzibar"),),
    )

    run_once()

    assert stores.embedded(conn, store) == {1: True, 2: True}
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)
    assert holds(conn, store, "word4999") and holds(conn, store, "farewell")
    assert not holds(conn, store, "zanzibar")
    # enable_fts()'s own fill of the rows there reads them alike.
    conn.execute("SELECT embeddings.enable_fts('docs', 'simple')")
    assert holds(conn, store, "word4999") and not holds(conn, store, "zanzibar")
