"""Chunked targets on every table real applications have: composite and declared keys,
partitioned tables, and schema changes followed (renamed content and key columns), on the
generated trigger layer, with the real all-MiniLM-L6-v2 and a real database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.integration.conftest import WIDE, WIDE_DIMS
from tests.integration.test_chunks import long_text
from tests.support import stores
from tests.support.jobs import clear_queue, messages, queued_keys
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]


def watch_chunked(conn: Conn, table: str, content: str, model: str, **options: Any) -> int:
    args = "".join(f", {k} => %({k})s" for k in options)
    row = conn.execute(
        f"SELECT embeddings.watch(%(table)s, %(content)s, model => %(model)s,"
        f" chunk_tokens => 64, chunk_overlap => 8{args})",
        {"table": table, "content": content, "model": model, **options},
    ).fetchone()
    assert row is not None
    return int(row[0])


def chunk_counts(conn: Conn, table: str, key: str) -> dict[Any, int]:
    return dict(conn.execute(f"SELECT {key}, count(*) FROM {table} GROUP BY 1 ORDER BY 1"))


def trigger_names(conn: Conn, table: str) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal"
            " ORDER BY tgname",
            (table,),
        )
    ]


# --- composite keys -----------------------------------------------------------------------------
@pytest.fixture
def tenant_docs(conn: Conn, minilm: str) -> int:
    conn.execute(
        "CREATE TABLE tenant_docs (tenant integer, id text, body text, PRIMARY KEY (tenant, id))"
    )
    conn.execute(
        "INSERT INTO tenant_docs VALUES (1, 'a', %s), (2, 'a', %s), (1, 'b', 'Short one.'),"
        " (2, 'b', NULL)",
        (long_text(8), long_text(3, "Zebras graze on the open savanna at dawn.")),
    )
    return watch_chunked(conn, "tenant_docs", "body", minilm)


def test_a_composite_key_chunk_table_has_every_key_column(conn: Conn, tenant_docs: int) -> None:
    assert [
        r[0]
        for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'tenant_docs_chunks'::regclass"
            " AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
        )
    ] == [
        "tenant",
        "id",
        "seq",
        "chunk",
        "chunk_hash",
        "embedding",
        "start_offset",
        "end_offset",
        "headings",
        "page",
    ]
    assert conn.execute(
        "SELECT key_columns::text[], embedding_attnum FROM embeddings.targets WHERE id = %s",
        (tenant_docs,),
    ).fetchone() == (["tenant", "id"], None)
    # Backfill and triggers: JSON arrays, in key-column order.
    assert sorted(queued_keys(conn, tenant_docs)) == [[1, "a"], [1, "b"], [2, "a"]]
    clear_queue(conn)
    conn.execute("INSERT INTO tenant_docs VALUES (3, 'c', 'new'), (3, 'd', '')")
    conn.execute("UPDATE tenant_docs SET body = body WHERE tenant = 1")  # no content change
    conn.execute("UPDATE tenant_docs SET body = 'changed' WHERE (tenant, id) = (2, 'a')")
    assert queued_keys(conn, tenant_docs) == [[3, "c"], [2, "a"]]
    # No clear trigger: a chunked target's source has no embedding column. Deletes and
    # truncations are followed into the chunk table (it has no foreign key to the table).
    assert trigger_names(conn, "tenant_docs") == [
        f"embeddings_{tenant_docs}_delete",
        f"embeddings_{tenant_docs}_insert",
        f"embeddings_{tenant_docs}_truncate",
        f"embeddings_{tenant_docs}_update",
    ]


def test_a_composite_key_chunked_target_is_embedded_edited_and_searched(
    conn: Conn, tenant_docs: int, run_once: Callable[..., Worker], minilm: str
) -> None:
    run_once()
    counts = chunk_counts(conn, "tenant_docs_chunks", "tenant::text || id")
    assert set(counts) == {"1a", "1b", "2a"} and counts["1a"] > counts["2a"] > 1
    assert messages(conn) == []
    # A shorter document loses its vanished chunks; the other tenant's same id keeps its own.
    conn.execute("UPDATE tenant_docs SET body = %s WHERE (tenant, id) = (1, 'a')", (long_text(2),))
    conn.execute("UPDATE tenant_docs SET body = '' WHERE (tenant, id) = (1, 'b')")
    run_once()
    after = chunk_counts(conn, "tenant_docs_chunks", "tenant::text || id")
    assert 0 < after["1a"] < counts["1a"] and after["2a"] == counts["2a"] and "1b" not in after
    status = conn.execute(
        "SELECT total_rows, embedded_rows, chunks, pending_jobs, failed_jobs FROM embeddings.status"
    ).fetchone()
    assert status == (4, 2, after["1a"] + after["2a"], 0, 0)
    # match_chunks returns composite keys as JSON arrays (the query: a chunk only 2a has).
    last, query = conn.execute(
        "SELECT seq, embedding FROM tenant_docs_chunks WHERE (tenant, id) = (2, 'a')"
        " ORDER BY seq DESC LIMIT 1"
    ).fetchone() or (None, None)
    found = conn.execute(
        "SELECT key, seq FROM embeddings.match_chunks('tenant_docs', %s::halfvec, 1)", (query,)
    ).fetchone()
    assert found == ([2, "a"], last)


def test_sweep_queues_composite_documents_without_chunks(
    conn: Conn, tenant_docs: int, run_once: Callable[..., Worker]
) -> None:
    stores.assert_sweep_restores(
        conn, run_once, tenant_docs, "tenant_docs_chunks", "(tenant, id) = (2, 'a')", [2, "a"]
    )


def test_a_declared_key_makes_a_chunked_target(
    conn: Conn, run_once: Callable[..., Worker], minilm: str
) -> None:
    conn.execute("CREATE TABLE notes (slug text NOT NULL UNIQUE, body text)")
    conn.execute("INSERT INTO notes VALUES ('x', %s)", (long_text(4),))
    tid = watch_chunked(conn, "notes", "body", minilm, key=["slug"])
    assert queued_keys(conn, tid) == ["x"]
    run_once()
    assert chunk_counts(conn, "notes_chunks", "slug")["x"] > 1


# --- schema changes -------------------------------------------------------------------------------
def test_a_renamed_content_column_is_followed(
    conn: Conn, tenant_docs: int, run_once: Callable[..., Worker]
) -> None:
    run_once()
    conn.execute("ALTER TABLE tenant_docs RENAME COLUMN body TO text_body")
    assert conn.execute(
        "SELECT content_column, problem FROM embeddings.targets WHERE id = %s", (tenant_docs,)
    ).fetchone() == ("text_body", None)
    conn.execute("INSERT INTO tenant_docs VALUES (5, 'e', %s)", (long_text(3),))
    conn.execute("UPDATE tenant_docs SET text_body = 'rewritten' WHERE (tenant, id) = (1, 'a')")
    assert queued_keys(conn, tenant_docs) == [[5, "e"], [1, "a"]]
    run_once()
    assert conn.execute(
        "SELECT array_agg(chunk ORDER BY seq) FROM tenant_docs_chunks WHERE (tenant, id) = (1, 'a')"
    ).fetchone() == (["rewritten"],)
    assert chunk_counts(conn, "tenant_docs_chunks", "tenant::text || id")["5e"] > 1
    assert messages(conn) == []


def test_renamed_key_columns_are_followed_by_the_chunk_table(
    conn: Conn, tenant_docs: int, run_once: Callable[..., Worker]
) -> None:
    run_once()
    conn.execute("ALTER TABLE tenant_docs RENAME COLUMN id TO doc_id")
    conn.execute("ALTER TABLE tenant_docs RENAME COLUMN tenant TO org")
    assert [
        r[0]
        for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'tenant_docs_chunks'::regclass"
            " AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
        )
    ][:2] == ["org", "doc_id"]
    conn.execute("INSERT INTO tenant_docs VALUES (7, 'g', %s)", (long_text(3),))
    conn.execute("UPDATE tenant_docs SET body = 'renamed keys' WHERE (org, doc_id) = (2, 'a')")
    run_once()
    counts = chunk_counts(conn, "tenant_docs_chunks", "org::text || doc_id")
    assert counts["7g"] > 1 and counts["2a"] == 1
    assert messages(conn) == []


# --- partitioned tables --------------------------------------------------------------------------
def test_a_partitioned_table_is_chunked_through_parent_and_partitions(
    conn: Conn, run_once: Callable[..., Worker], minilm: str
) -> None:
    conn.execute(
        "CREATE TABLE pdocs (region text, id bigint, body text, PRIMARY KEY (region, id))"
        " PARTITION BY LIST (region)"
    )
    conn.execute("CREATE TABLE pdocs_eu PARTITION OF pdocs FOR VALUES IN ('eu')")
    conn.execute("INSERT INTO pdocs VALUES ('eu', 1, %s)", (long_text(3),))
    tid = watch_chunked(conn, "pdocs", "body", minilm)
    conn.execute("INSERT INTO pdocs_eu VALUES ('eu', 2, 'straight into the partition')")
    conn.execute("CREATE TABLE pdocs_us (LIKE pdocs)")
    conn.execute("INSERT INTO pdocs_us VALUES ('us', 3, 'attached with its rows')")
    conn.execute("ALTER TABLE pdocs ATTACH PARTITION pdocs_us FOR VALUES IN ('us')")
    assert sorted(queued_keys(conn, tid)) == [["eu", 1], ["eu", 2], ["us", 3]]
    run_once()
    counts = chunk_counts(conn, "pdocs_chunks", "region || id")
    assert set(counts) == {"eu1", "eu2", "us3"} and counts["eu1"] > 1
    assert messages(conn) == []


# --- re-registration ------------------------------------------------------------------------------
@pytest.fixture
def tiny_docs(conn: Conn, tiny_models: tuple[str, str]) -> int:
    conn.execute("CREATE TABLE docs (id integer PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs VALUES (1, %s), (2, 'Short one.')", (long_text(3),))
    return watch_chunked(conn, "docs", "body", tiny_models[0])


def chunk_vectors(conn: Conn, table: str = "docs_chunks") -> dict[tuple[int, int], Any]:
    return {
        (key, seq): vector
        for key, seq, vector in conn.execute(f"SELECT id, seq, embedding::text FROM {table}")
    }


def test_a_chunked_target_watched_with_another_model_is_re_embedded_with_it(
    conn: Conn, tiny_docs: int, tiny_models: tuple[str, str], run_once: Callable[..., Worker]
) -> None:
    """In place (a chunked target has no blue/green change): every chunk gets the new model's
    vector, and the old model's provenance record does not hold the new vectors back."""
    run_once()
    before = chunk_vectors(conn)
    watch_chunked(conn, "docs", "body", tiny_models[1])
    run_once()
    after = chunk_vectors(conn)
    assert messages(conn) == []
    assert set(after) == set(before)
    assert all(after[k] != before[k] for k in before)  # every chunk re-embedded
    assert conn.execute(
        "SELECT model FROM embeddings.provenance WHERE target_id = %s AND NOT shadow", (tiny_docs,)
    ).fetchone() == (tiny_models[1],)


def test_a_chunked_target_s_model_of_another_dimension_says_so_and_moves_to_a_new_table(
    conn: Conn, tiny_docs: int, run_once: Callable[..., Worker]
) -> None:
    """A chunk table holds one dimension: watch() with a model of another names that, not
    "not a chunk table for" its own chunk table (0.3.0), and hints the move docs/model-changes.md
    describes. Following it, the documents are embedded into the new table, searched from it,
    and the old table is kept until dropped, which leaves the target as it is."""
    conn.execute(
        "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
        " VALUES (%s, %s, 512, 'mean')",
        (WIDE, WIDE_DIMS),
    )
    run_once()
    with pytest.raises(psycopg.errors.FeatureNotSupported) as refused:
        watch_chunked(conn, "docs", "body", WIDE)
    diag = refused.value.diag
    assert diag.message_primary == (
        f"model {WIDE} makes {WIDE_DIMS}-dimensional vectors, and the chunk table docs_chunks"
        " of public.docs holds 32-dimensional ones"
    )
    assert diag.message_hint is not None and (
        f"chunk_table => 'docs_chunks_{WIDE_DIMS}'" in diag.message_hint
    )
    watch_chunked(conn, "docs", "body", WIDE, chunk_table=f"docs_chunks_{WIDE_DIMS}")
    run_once()
    assert chunk_counts(conn, f"docs_chunks_{WIDE_DIMS}", "id") == chunk_counts(
        conn, "docs_chunks", "id"
    )
    assert stores.columns(conn, f"docs_chunks_{WIDE_DIMS}")[4][1] == f"halfvec({WIDE_DIMS})"
    conn.execute("DROP TABLE docs_chunks")
    assert conn.execute(
        "SELECT chunk_table::text, model FROM embeddings.targets WHERE id = %s", (tiny_docs,)
    ).fetchone() == (f"docs_chunks_{WIDE_DIMS}", WIDE)


@pytest.mark.parametrize(
    "ddl",
    [
        "ALTER TABLE docs RENAME TO papers",
        "ALTER TABLE docs RENAME COLUMN id TO doc_id",
        "CREATE SCHEMA archive; ALTER TABLE docs SET SCHEMA archive",
    ],
)
def test_a_chunked_target_watched_again_after_ddl_keeps_its_chunk_table(
    conn: Conn,
    tiny_docs: int,
    tiny_models: tuple[str, str],
    run_once: Callable[..., Worker],
    ddl: str,
) -> None:
    """As a side-table target keeps its side table: watch() again (another model, say) after the
    table was renamed or moved, or its key renamed, goes on with the same chunk table rather than
    starting another beside the new name (and failing on a table left there earlier)."""
    run_once()
    conn.execute(ddl)
    table = conn.execute(
        "SELECT source::text FROM embeddings.targets WHERE id = %s", (tiny_docs,)
    ).fetchone()
    assert table is not None
    watch_chunked(conn, table[0], "body", tiny_models[1])
    assert conn.execute(
        "SELECT chunk_table::text FROM embeddings.targets WHERE id = %s", (tiny_docs,)
    ).fetchone() == ("docs_chunks",)
    run_once()
    assert messages(conn) == []
    assert conn.execute("SELECT count(DISTINCT 1) FROM docs_chunks").fetchone() == (1,)
    assert conn.execute(
        "SELECT count(*) FROM pg_class WHERE relname LIKE '%%_chunks' AND relkind = 'r'"
    ).fetchone() == (1,)
