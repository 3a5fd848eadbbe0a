"""doctor's search memory check counts every HNSW index a search walks: a plain target's, a
chunked target's chunks table's and each partition's of a partitioned table (a partitioned index
holds no pages of its own), against the server's shared_buffers."""

from __future__ import annotations

import re
from typing import Any

import psycopg

from tests.support.fetch import wait_for_row
from tests.support.process import run_cli
from worker import db
from worker.cli import search_memory

Conn = psycopg.Connection[Any]


def hnsw_bytes(conn: Conn, tables: tuple[str, ...]) -> int:
    (total,) = conn.execute(
        "SELECT coalesce(sum(pg_relation_size(i.indexrelid)), 0)::bigint FROM pg_index i"
        " JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam"
        " WHERE am.amname = 'hnsw' AND i.indrelid = ANY(%s::regclass[])",
        (list(tables),),
    ).fetchone() or (0,)
    return int(total)


def test_doctor_counts_the_hnsw_indexes_of_every_target_against_shared_buffers(
    conn: Conn, dsn: str, minilm: str
) -> None:
    assert search_memory.findings(conn)[0].detail == "no watched table has an HNSW index yet"
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('notes', 'body', model => %s)", (minilm,))
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s, chunk_tokens => 64)", (minilm,)
    )
    conn.execute("CREATE TABLE parts (id int PRIMARY KEY, body text) PARTITION BY RANGE (id)")
    for n in range(2):
        conn.execute(
            f"CREATE TABLE parts_{n} PARTITION OF parts FOR VALUES FROM ({n * 100}) TO ({n * 100 + 100})"
        )
    conn.execute("SELECT embeddings.watch('parts', 'body', model => %s)", (minilm,))
    conn.execute(
        "INSERT INTO notes SELECT i, 'note ' || i FROM generate_series(1, 50) i;"
        " INSERT INTO docs SELECT i, 'doc ' || i FROM generate_series(1, 50) i;"
        " INSERT INTO parts SELECT i, 'part ' || i FROM generate_series(1, 150) i"
    )
    assert run_cli("run", "--once", "--database-url", dsn).returncode == 0
    walked = ("notes", "docs_chunks", "parts_0", "parts_1")
    assert hnsw_bytes(conn, walked) > 0
    assert hnsw_bytes(conn, ("parts", "docs")) == 0  # none of its own, or none at all

    (found,) = search_memory.findings(conn)

    (shared_buffers,) = conn.execute(
        "SELECT pg_size_bytes(current_setting('shared_buffers'))"
    ).fetchone() or (0,)
    assert found == search_memory.memory_finding(  # none searched yet: all of them count
        [("total", hnsw_bytes(conn, walked), 0)], int(shared_buffers)
    )
    out = run_cli("doctor", "--database-url", dsn).stdout
    assert re.search(
        r"^ok\s+search memory: [\d,]+ kB of HNSW indexes, shared_buffers [\d,]+ MB: shared"
        r" buffers can hold them$",
        out,
        re.MULTILINE,
    ), out

    # A search walks notes' index (the others' tables are searched exactly, or not at all):
    # only it needs shared buffers now.
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute(
        "SET enable_seqscan = off; SELECT id FROM notes"
        " ORDER BY embedding <=> (SELECT embedding FROM notes WHERE id = 1) LIMIT 1"
    )
    conn.execute("RESET enable_seqscan")
    searched = "SELECT pg_stat_get_numscans('notes_embedding_idx'::regclass) > 0"
    wait_for_row(conn, searched, (True,), 10, "notes' index scan counted")
    (found,) = search_memory.findings(conn)
    assert found == search_memory.memory_finding(
        [("notes", hnsw_bytes(conn, ("notes",)), 1), *[("other", 0, 0)] * 3], int(shared_buffers)
    )
    assert "searched (3 more never searched, not counted)" in found.detail


def test_an_index_held_locked_is_waited_for_within_the_lock_timeout(
    conn: Conn, dsn: str, minilm: str
) -> None:
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('notes', 'body', model => %s)", (minilm,))
    with psycopg.connect(dsn) as holder:  # a transaction left open, the index locked
        holder.execute("DROP INDEX notes_embedding_idx")  # ACCESS EXCLUSIVE until rolled back
        with db.connect(dsn, lock_timeout_ms=200) as doctors:
            (found,) = search_memory.findings(doctors)
        holder.rollback()
    assert (found.level, found.detail) == ("warn", "not checked: an HNSW index was locked")
