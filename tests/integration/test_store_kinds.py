"""Store kinds as strategies in SQL (sql/54_stores.sql): the registry names each target's kind
and the table its vectors are written to, every kind of store_kinds() has every operation the
shared code dispatches to (its own function, or for a kind apart from its table the one stores
apart share), and a kind or an operation that does not exist is refused by name, never served
by another kind's functions."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.support import stores
from tests.support.fetch import fetch_row
from tests.support.stores import ALL_STORES

Conn = psycopg.Connection[Any]

# The operations sql/54_stores.sql lists: what a new kind must provide.
OPERATIONS = (
    "missing_sql",
    "holds_vector_sql",
    "new_row_sql",
    "changed_vector_sql",
    "lock_mode",
    "access",
    "clear_sql",
    "search_sql",
    "exact_counts",
    "estimated_vectors",
)


def test_the_registry_names_each_targets_store_kind_and_table(conn: Conn) -> None:
    for store in ALL_STORES:
        conn.execute(f"CREATE TABLE docs_{store} (id int PRIMARY KEY, body text)")
        target = stores.watch(conn, store, "all-MiniLM-L6-v2", table=f"docs_{store}")
        row = fetch_row(
            conn,
            "SELECT store_kind, store_table = source, side_table, chunk_table"
            " FROM embeddings.targets WHERE id = %s",
            (target,),
        )
        kind, in_its_table, side_table, chunk_table = row
        assert kind == store
        assert in_its_table == (store == "row")
        # release 0.3.0's columns, derived for its workers (a rolling upgrade)
        assert (side_table is not None, chunk_table is not None) == (
            store == "side",
            store == "chunks",
        )
    with pytest.raises(psycopg.errors.GeneratedAlways):
        conn.execute("UPDATE embeddings.targets SET side_table = NULL")


def test_every_kind_has_every_operation(conn: Conn) -> None:
    kinds = [
        k for (k,) in conn.execute("SELECT kind FROM embeddings_internal.store_kinds()").fetchall()
    ]
    assert sorted(kinds) == sorted(ALL_STORES)
    served = {
        (kind, operation): conn.execute(
            "SELECT embeddings_internal.store_function("
            " jsonb_populate_record(NULL::embeddings.targets, jsonb_build_object('store_kind', %s::text)),"
            " %s)",
            (kind, operation),
        ).fetchone()
        for kind in kinds
        for operation in OPERATIONS
    }
    # the kind's own function, or (a kind apart from its table) the one stores apart share
    assert {
        key: fn
        for key, fn in served.items()
        if fn
        not in (
            (f"embeddings_internal.{key[0]}_store_{key[1]}",),
            (f"embeddings_internal.apart_store_{key[1]}",),
        )
    } == {}
    assert served[("row", "lock_mode")] == ("embeddings_internal.row_store_lock_mode",)
    assert served[("side", "lock_mode")] == ("embeddings_internal.apart_store_lock_mode",)


def test_dispatch_reaches_the_kinds_function(conn: Conn) -> None:
    """The shared code's call gives what the kind's own function gives."""
    for store in ALL_STORES:
        conn.execute(f"CREATE TABLE docs_{store} (id int PRIMARY KEY, body text)")
        target = stores.watch(conn, store, "all-MiniLM-L6-v2", table=f"docs_{store}")
        # as the generators call them: tables named with their schema
        conn.execute("SET search_path = pg_catalog, pg_temp")
        shared, own = conn.execute(
            "SELECT embeddings_internal.embedding_missing_sql(t, 'x'),"
            f" embeddings_internal.{store}_store_missing_sql(t, 'x')"
            " FROM embeddings.targets t WHERE t.id = %s",
            (target,),
        ).fetchone() or (None, None)
        assert shared == own and own is not None
        lock = conn.execute(
            "SELECT embeddings_internal.store_lock_mode(t) FROM embeddings.targets t WHERE t.id = %s",
            (target,),
        ).fetchone()
        assert lock == ("ROW EXCLUSIVE" if store == "row" else "ACCESS SHARE",)
        conn.execute("RESET search_path")


@pytest.mark.parametrize(
    ("kind", "operation"),
    [
        ("row", "nonesuch"),  # an operation no kind has
        ("tape", "missing_sql"),  # a kind nobody wrote
        ("embeddings_1", "shadow"),  # a prefix naming another function of the schema
        ("row", "missing_sql(t, 'x'); --"),  # an operation that is not a word
    ],
)
def test_an_unknown_kind_or_operation_is_refused_by_name(
    conn: Conn, kind: str, operation: str
) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    stores.watch(conn, "row", "all-MiniLM-L6-v2")
    with pytest.raises(psycopg.errors.UndefinedFunction) as raised:
        conn.execute(
            "SELECT embeddings_internal.store_function("
            " jsonb_populate_record(t, jsonb_build_object('store_kind', %s::text)), %s)"
            " FROM embeddings.targets t",
            (kind, operation),
        )
    assert f"the {kind} store has no {operation} operation" in str(raised.value)
