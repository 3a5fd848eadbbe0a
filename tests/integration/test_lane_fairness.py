"""The backfill lane takes turns between its targets: a 2,000-row load of one table is not held
behind a 200,000-row load of another, nor behind another table's backfill or model change (the
lane was first in, first out: the second load waited for all of the first), and the backfill
goes on beside a load rather than waiting for its end. And the size past which a statement is
a bulk load is a setting (embeddings.bulk_statement_rows).

Order, not time, as in test_bulk_statements.py: each row's vector is written by a transaction
of its own batch, so the xmin of the row version says which batch came first."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from tests.integration.test_bulk_statements import watched
from tests.integration.test_lanes import lane_keys
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]

BATCH = 128  # keys a backfill read takes: one message (keys_per_message()), the test batch 64


def written(conn: Conn, table: str) -> list[int]:
    """The transactions that wrote `table`'s vectors, one per row, in the order they ran."""
    rows = conn.execute(
        f"SELECT xmin::text::bigint FROM {table} WHERE embedding IS NOT NULL ORDER BY 1"
    ).fetchall()
    return [x for (x,) in rows]


def before(xids: list[int], xid: int) -> int:
    """How many of the rows were written by a batch before the one that ran as `xid`."""
    return sum(1 for x in xids if x < xid)


def test_a_small_bulk_load_is_not_held_behind_a_large_one(
    conn: Conn, tiny_models: tuple[str, str], run_once: Callable[..., Worker]
) -> None:
    watched(conn, tiny_models[0], "big_load", "small_load")
    big, small = 6000, 1500
    conn.execute("INSERT INTO big_load SELECT g, 'big ' || g FROM generate_series(1, %s) g", (big,))
    conn.execute(
        "INSERT INTO small_load SELECT g, 'small ' || g FROM generate_series(1, %s) g", (small,)
    )
    run_once(model=tiny_models[0])
    big_xids, small_xids = written(conn, "big_load"), written(conn, "small_load")
    assert (len(big_xids), len(small_xids)) == (big, small)
    # Turn by turn: the small load is done while most of the big one still waits (first in,
    # first out: none of it).
    assert before(big_xids, small_xids[-1]) <= small + 2 * BATCH, before(big_xids, small_xids[-1])


def test_a_bulk_load_and_another_tables_backfill_take_turns(
    conn: Conn, tiny_models: tuple[str, str], run_once: Callable[..., Worker]
) -> None:
    """A watch() backfill (queued a key range at a time) and a bulk load that came after it:
    the load starts at once, and the backfill goes on beside it (it stepped when the lane was
    low: not again until the whole load was done)."""
    conn.execute("CREATE TABLE existing (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO existing SELECT g, 'existing ' || g FROM generate_series(1, 8000) g")
    conn.execute("SELECT embeddings.watch('existing', 'body', model => %s)", (tiny_models[0],))
    conn.execute("CREATE TABLE loaded (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('loaded', 'body', model => %s)", (tiny_models[0],))
    load = 6000
    conn.execute("INSERT INTO loaded SELECT g, 'load ' || g FROM generate_series(1, %s) g", (load,))
    run_once(model=tiny_models[0])
    backfill, loaded = written(conn, "existing"), written(conn, "loaded")
    assert (len(backfill), len(loaded)) == (8000, load)
    # The load's first rows after a batch or two of the backfill (not after its first step) ...
    assert before(backfill, loaded[0]) <= 2 * BATCH, before(backfill, loaded[0])
    # ... and half-way through the load, the backfill has had its turns too.
    assert before(backfill, loaded[load // 2]) >= 2000, before(backfill, loaded[load // 2])


def test_the_bulk_statement_size_is_a_setting(conn: Conn, tiny_models: tuple[str, str]) -> None:
    """Read where the inbox is moved (no cost to the write path): per database or role of the
    sessions that move it (the worker's, sweep()'s), or per session."""
    watched(conn, tiny_models[0], "docs")
    conn.execute("SET embeddings.bulk_statement_rows = 2000")
    conn.execute("INSERT INTO docs SELECT g, 'a big form' FROM generate_series(1, 1500) g")
    assert len(lane_keys(conn, "embedding_jobs")) == 1500
    assert lane_keys(conn, "embedding_jobs_backfill") == []

    conn.execute("SET embeddings.bulk_statement_rows = 100")
    conn.execute("INSERT INTO docs SELECT g, 'a load' FROM generate_series(2001, 2101) g")
    conn.execute("INSERT INTO docs SELECT g, 'a page' FROM generate_series(3001, 3100) g")
    assert len(lane_keys(conn, "embedding_jobs")) == 1600  # (moves the inbox)
    assert lane_keys(conn, "embedding_jobs_backfill") == list(range(2001, 2102))

    conn.execute("RESET embeddings.bulk_statement_rows")  # the default: 1,000
    assert conn.execute("SELECT embeddings_internal.bulk_statement_keys()").fetchone() == (1000,)
