"""Names we generate (deferred HNSW indexes, shadow and kept columns, kept indexes, full-text
columns) fit Postgres' 63 bytes without colliding: cut by bytes, not characters, with room for
their suffix, a hash where cut, and the target id in a deferred index's name
(sql/15_names.sql: suffixed_name(); sql/62_backfill.sql)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.support.deferred_indexes import deferred_count, hnsw_indexes
from tests.support.fetch import fetch_value
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]
# Two tables whose names share their first 40 characters (0.3.0 cut there)
SHARED = "customer_support_tickets_archive_2023_emea"
# 21 characters of 3 bytes: 63 bytes, Postgres' most
LONG_COLUMN = "埋め込みベクトルの列名はとても長い名前です"
# A table whose HNSW index Postgres names in 63 bytes
LONG_TABLE = "文書テーブルの名前がとても長い場ab"


def large(conn: Conn, table: str) -> None:
    """Makes the planner take `table` (never written) for one of more than index_defer_rows()
    rows: watch() defers its index (sql/40_watch.sql: watch_index())."""
    conn.execute(
        "UPDATE pg_class SET reltuples = embeddings.index_defer_rows() + 1 WHERE oid = %s::regclass",
        (table,),
    )


def plain_table(conn: Conn, table: str) -> str:
    quoted = sql.Identifier(table).as_string(conn)
    conn.execute(f"CREATE TABLE {quoted} (id bigint PRIMARY KEY, body text)")
    return quoted


def partitioned_table(conn: Conn, table: str, *partitions: str) -> None:
    conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, body text) PARTITION BY RANGE (id)")
    for i, name in enumerate(partitions):
        conn.execute(
            f"CREATE TABLE {name} PARTITION OF {table} FOR VALUES FROM ({i * 100}) TO ({i * 100 + 100})"
        )
        large(conn, name)


def indexed(conn: Conn, table: str) -> bool:
    """Whether `table` has a valid HNSW index on its column `embedding`."""
    return hnsw_indexes(conn, table) != [] and all(valid for _, valid in hnsw_indexes(conn, table))


def watch(conn: Conn, table: str, model: str, **options: Any) -> int:
    extra = "".join(f", {name} => %({name})s" for name in options)
    return int(
        fetch_value(
            conn,
            f"SELECT embeddings.watch(%(table)s, 'body', model => %(model)s{extra})",
            {"table": table, "model": model, **options},
        )
    )


def test_a_name_with_a_suffix_is_cut_by_bytes_and_never_the_name_it_is_made_from(
    conn: Conn,
) -> None:
    name = "embeddings_internal.suffixed_name(%s, %s)"
    assert (
        fetch_value(conn, f"SELECT {name}", ("docs_embedding", "_7_hnsw"))
        == "docs_embedding_7_hnsw"
    )
    for base, suffix in [(LONG_COLUMN, "_next"), ("a" * 58 + "_next", "_next"), ("é" * 40, "_fts")]:
        made = fetch_value(conn, f"SELECT {name}", (base, suffix))
        assert made != base and made.endswith(suffix), made
        assert len(made.encode()) <= 63, made
        made.encode().decode()  # cut at a character boundary
    # Two long names sharing their first bytes stay apart.
    first, second = (
        fetch_value(conn, f"SELECT {name}", (SHARED + tail + "_embedding", "_1_hnsw"))
        for tail in ("_q1_with_more_words", "_q2_with_more_words")
    )
    assert first != second


def test_tables_sharing_their_first_40_characters_each_get_their_deferred_index(
    conn: Conn, run_once: Callable[..., Worker], tiny_models: tuple[str, str]
) -> None:
    """0.3.0 named both `<first 40>_embedding_hnsw`: CREATE INDEX CONCURRENTLY IF NOT EXISTS
    skipped the second, the worker logged it built and tried again forever."""
    for table in (SHARED + "_q1", SHARED + "_q2"):
        plain_table(conn, table)
        large(conn, table)
        watch(conn, table, tiny_models[0])
    assert deferred_count(conn) == 2
    run_once(model=tiny_models[0])
    assert indexed(conn, SHARED + "_q1") and indexed(conn, SHARED + "_q2")
    assert deferred_count(conn) == 0


def test_partitions_sharing_their_first_40_characters_each_get_their_index(
    conn: Conn, run_once: Callable[..., Worker], tiny_models: tuple[str, str]
) -> None:
    leaves = (SHARED + "_2024_01", SHARED + "_2024_02")
    partitioned_table(conn, "tickets", *leaves)
    watch(conn, "tickets", tiny_models[0])
    assert deferred_count(conn) == 1
    run_once(model=tiny_models[0])
    assert indexed(conn, leaves[0]) and indexed(conn, leaves[1])
    assert indexed(conn, "tickets")  # valid once every partition's is attached
    assert deferred_count(conn) == 0


def test_partitioned_tables_sharing_their_first_40_characters_are_both_watched(
    conn: Conn, tiny_models: tuple[str, str]
) -> None:
    """The second watch() failed: `relation "<first 40>_embedding_hnsw" already exists`."""
    for table in (SHARED + "_q1", SHARED + "_q2"):
        partitioned_table(conn, table, table + "_a")
        watch(conn, table, tiny_models[0])
    assert deferred_count(conn) == 2


def test_a_table_of_63_bytes_gets_a_deferred_index_of_another_name(
    conn: Conn, run_once: Callable[..., Worker], tiny_models: tuple[str, str]
) -> None:
    table = "表" * 21  # 63 bytes: its index was named like the table itself
    partitioned_table(conn, sql.Identifier(table).as_string(conn), '"' + "区" * 21 + '"')
    watch(conn, '"' + table + '"', tiny_models[0])
    run_once(model=tiny_models[0])
    assert indexed(conn, '"' + "区" * 21 + '"') and indexed(conn, '"' + table + '"')


def test_a_build_whose_name_is_taken_is_not_said_built_and_holds_no_other_back(
    conn: Conn,
    run_once: Callable[..., Worker],
    tiny_models: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = plain_table(conn, "first")
    large(conn, first)
    first_id = watch(conn, "first", tiny_models[0])
    plain_table(conn, "second")
    large(conn, "second")
    watch(conn, "second", tiny_models[0])
    # A user's index of another table holds the name of the first one's deferred index.
    name = fetch_value(
        conn,
        "SELECT embeddings_internal.deferred_index_name(t) FROM embeddings.targets t WHERE t.id = %s",
        (first_id,),
    )
    conn.execute("CREATE TABLE other (id int)")
    conn.execute(sql.SQL("CREATE INDEX {} ON other (id)").format(sql.Identifier(name)))
    with caplog.at_level(logging.INFO, logger="worker.process.index_builder"):
        run_once(model=tiny_models[0])
    assert not indexed(conn, "first") and indexed(conn, "second")
    assert deferred_count(conn) == 1
    said = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith(f"target {first_id}:")
    ]
    assert not [m for m in said if "built in" in m], said
    assert [m for m in said if "is taken by an index of public.other" in m], said


def test_a_partitioned_target_of_0_3_0_finds_its_parent_index_under_its_old_name(
    conn: Conn, run_once: Callable[..., Worker], tiny_models: tuple[str, str]
) -> None:
    """Upgraded from 0.3.0, a partitioned target's parent index has 0.3.0's name: its
    partitions' indexes are attached to it."""
    leaves = (SHARED + "_2024_01", SHARED + "_2024_02")
    partitioned_table(conn, "tickets", *leaves)
    target = watch(conn, "tickets", tiny_models[0])
    new = fetch_value(
        conn,
        "SELECT embeddings_internal.deferred_index_name(t) FROM embeddings.targets t WHERE t.id = %s",
        (target,),
    )
    conn.execute(f"ALTER INDEX {new} RENAME TO tickets_embedding_hnsw")  # 0.3.0's name
    # and 0.3.0's index on the first partition, built but not attached (a build interrupted)
    old_leaf = leaves[0][:40] + "_embedding_hnsw"
    conn.execute(
        f"CREATE INDEX {old_leaf} ON {leaves[0]} USING hnsw (embedding halfvec_cosine_ops)"
    )
    run_once(model=tiny_models[0])
    assert indexed(conn, "tickets")
    assert hnsw_indexes(conn, leaves[0]) == [(old_leaf, True)]  # attached, not built again
    assert deferred_count(conn) == 0


def test_a_model_change_of_a_column_of_63_bytes_makes_its_shadow_column(
    conn: Conn, tiny_models: tuple[str, str]
) -> None:
    """The shadow column's name was cut by characters, then by Postgres into the column's own:
    rewatch() refused, telling the user to rename or drop the target's live column."""
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute(
        "SELECT embeddings.watch('docs', 'body', embedding_column => %s, model => %s)",
        (LONG_COLUMN, tiny_models[0]),
    )
    conn.execute(
        "SELECT embeddings.rewatch('docs', %s, model => %s)", (LONG_COLUMN, tiny_models[1])
    )
    shadow = fetch_value(conn, "SELECT shadow_column FROM embeddings.model_changes")
    assert shadow != LONG_COLUMN and len(shadow.encode()) <= 63


def test_a_model_change_keeping_an_index_of_63_bytes_keeps_it_under_another_name(
    conn: Conn, tiny_models: tuple[str, str]
) -> None:
    table = sql.Identifier(LONG_TABLE).as_string(conn)
    conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, body text)")
    watch(conn, table, tiny_models[0])
    (index,) = [name for name, _ in hnsw_indexes(conn, table)]
    assert len(index.encode()) == 63
    # refused before: "relation ... exists: keep_old => true would keep the old index under that name"
    conn.execute(
        "SELECT embeddings.rewatch(%s, model => %s, keep_old => true)", (table, tiny_models[1])
    )
    assert fetch_value(conn, "SELECT keep_old FROM embeddings.model_changes")


def test_full_text_beside_a_column_of_63_bytes_leaves_the_column(
    conn: Conn, tiny_models: tuple[str, str]
) -> None:
    """The full-text column's name was the embedding column's: enable_fts() dropped it."""
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute(
        "SELECT embeddings.watch('docs', 'body', embedding_column => %s, model => %s, fts => 'english')",
        (LONG_COLUMN, tiny_models[0]),
    )
    columns = [
        row[0]
        for row in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'docs'::regclass AND attnum > 0"
            " AND NOT attisdropped"
        ).fetchall()
    ]
    fts = fetch_value(conn, "SELECT fts_column FROM embeddings.targets")
    assert LONG_COLUMN in columns and fts in columns and fts != LONG_COLUMN
