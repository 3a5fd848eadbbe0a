"""An UPDATE trigger's statement is planned for the statement's size, whatever the connection
ran before: PL/pgSQL keeps the plan it made at a statement's first run, for the transition
tables' row counts then (embeddings_internal.sized_statement_sql())."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.support import stores
from tests.support.fetch import fetch_value
from tests.support.jobs import clear_queue
from tests.support.plans import nested_plans

Conn = psycopg.Connection[Any]

ROWS = 3000


def enqueue_plans(plans: list[str]) -> list[str]:
    """The plans of the trigger's statement that queues the updated rows."""
    return [p for p in plans if "INSERT INTO embeddings.inbox" in p]


def watched(conn: Conn, model: str, store: str = "row") -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute(f"INSERT INTO docs SELECT g, 'row ' || g FROM generate_series(1, {ROWS}) g")
    stores.watch(conn, store, model)
    clear_queue(conn)


@pytest.mark.parametrize("store", stores.ALL_STORES)
def test_a_large_update_after_a_single_row_one_is_not_a_nested_loop(
    conn: Conn, tiny_models: tuple[str, str], store: str
) -> None:
    """Planned for one row, the join of old and new rows is a nested loop (for a store apart
    from the table, the anti-join of the keys an UPDATE took away too): reused for an UPDATE of
    6,000 rows, it compared every new row with every old one (1.8 s against 36 ms)."""
    watched(conn, tiny_models[0], store)
    conn.execute("UPDATE docs SET body = 'one' WHERE id = 1")  # the connection's first plan
    plans = enqueue_plans(nested_plans(conn, "UPDATE docs SET body = body || ' edited'"))
    assert plans, "auto_explain showed no plan of the trigger's statement"
    # (the one-row aggregate's Nested Loop with generate_series() is no join of the row sets)
    assert "Nested Loop Left Join" not in plans[-1], plans[-1]
    assert "Nested Loop Anti Join" not in plans[-1], plans[-1]
    assert fetch_value(conn, "SELECT sum(keys) FROM embeddings.inbox") == ROWS + 1


def test_a_single_row_update_after_a_large_one_is_not_jit_compiled(
    conn: Conn, tiny_models: tuple[str, str]
) -> None:
    """Planned for thousands of rows, the statement costs enough to be JIT-compiled: reused, it
    compiled again for every single-row UPDATE on that connection (10-50 ms each)."""
    if not fetch_value(conn, "SELECT pg_jit_available()"):
        pytest.skip("this server has no JIT provider (llvmjit)")
    watched(conn, tiny_models[0])
    # JIT for any statement costlier than a small one's (the default, 100,000, needs ~50,000 rows).
    conn.execute("SET jit = on")
    conn.execute("SET jit_above_cost = 1000")
    large = enqueue_plans(nested_plans(conn, "UPDATE docs SET body = body || ' edited'"))
    assert "JIT" in large[-1], "the large statement's own plan should be costly enough for JIT"
    plans = enqueue_plans(nested_plans(conn, "UPDATE docs SET body = 'one' WHERE id = 1"))
    assert plans, "auto_explain showed no plan of the trigger's statement"
    assert "JIT" not in plans[-1], plans[-1]
    assert fetch_value(conn, "SELECT sum(keys) FROM embeddings.inbox") == ROWS + 1
