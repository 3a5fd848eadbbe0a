"""A bulk statement does not stand in front of other statements' rows: the keys of a statement
that wrote more than embeddings_internal.bulk_statement_keys() rows go to the backfill lane,
so that single rows written after it, of any table, are embedded first (QA 5a, finding 3: a
50,000-row COPY held another table's one-row INSERT back for 216 s)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from tests.integration.test_lanes import lane_keys
from tests.support.fetch import fetch_value
from tests.support.jobs import clear_queue
from worker import queries
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]

BULK = 1000  # embeddings_internal.bulk_statement_keys()


def watched(conn: Conn, model: str, *tables: str) -> None:
    for table in tables:
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, body text)")
        conn.execute("SELECT embeddings.watch(%s, 'body', model => %s)", (table, model))
    clear_queue(conn)


def test_a_statement_of_more_than_the_bulk_size_goes_to_the_backfill_lane(
    conn: Conn, tiny_models: tuple[str, str]
) -> None:
    assert fetch_value(conn, "SELECT embeddings_internal.bulk_statement_keys()") == BULK
    watched(conn, tiny_models[0], "docs")
    conn.execute(
        "INSERT INTO docs SELECT g, 'bulk' FROM generate_series(1, %s::int) g", (BULK + 1,)
    )
    conn.execute(
        "INSERT INTO docs SELECT g, 'at the bulk size' FROM generate_series(%s::int, %s::int) g",
        (BULK + 2, 2 * BULK + 1),
    )
    conn.execute("INSERT INTO docs VALUES (%s, 'one row')", (2 * BULK + 2,))
    # A key that a small statement wrote too is queued once, live: a single row's write first.
    conn.execute("UPDATE docs SET body = 'edited' WHERE id = 7")
    assert lane_keys(conn, "embedding_jobs") == [7, *range(BULK + 2, 2 * BULK + 3)]
    assert lane_keys(conn, "embedding_jobs_backfill") == [k for k in range(1, BULK + 2) if k != 7]
    assert fetch_value(conn, "SELECT count(*) FROM embeddings.inbox") == 0
    # Both lanes are the target's pending work, as status counts it.
    assert conn.execute(
        "SELECT pending_jobs, pending_live, pending_backfill FROM embeddings.status"
    ).fetchone() == (2 * BULK + 2, BULK + 2, BULK)

    # A bulk UPDATE is a bulk statement too.
    clear_queue(conn)
    conn.execute("UPDATE docs SET body = 'all edited'")
    assert lane_keys(conn, "embedding_jobs") == []
    assert lane_keys(conn, "embedding_jobs_backfill") == list(range(1, 2 * BULK + 3))


def test_single_rows_written_after_a_bulk_statement_are_embedded_before_its_backlog(
    conn: Conn, tiny_models: tuple[str, str], run_once: Callable[..., Worker]
) -> None:
    """Order, not time: each row's vector is written by a transaction of its own batch, so the
    xmin of its row version says which batch came first."""
    watched(conn, tiny_models[0], "bulk_docs", "probe_docs")
    rows = 3 * BULK
    conn.execute(
        "INSERT INTO bulk_docs SELECT g, 'bulk row ' || g FROM generate_series(1, %s) g", (rows,)
    )
    conn.execute("INSERT INTO probe_docs VALUES (1, 'latency probe, another table')")
    conn.execute("INSERT INTO bulk_docs VALUES (%s, 'latency probe, the same table')", (rows + 1,))
    run_once(model=tiny_models[0])
    assert fetch_value(conn, "SELECT count(*) FROM bulk_docs WHERE embedding IS NULL") == 0
    probes = conn.execute(
        "SELECT xmin::text::bigint FROM probe_docs WHERE id = 1"
        " UNION ALL SELECT xmin::text::bigint FROM bulk_docs WHERE id = %s",
        (rows + 1,),
    ).fetchall()
    for (probe,) in probes:
        after = fetch_value(
            conn, "SELECT count(*) FROM bulk_docs WHERE xmin::text::bigint > %s", (probe,)
        )
        # All but at most a batch (64) or two of the bulk statement's rows come after.
        assert after >= rows - 2 * 64, (probe, after)


def test_status_and_the_gauges_count_a_bulk_statements_keys_in_the_inbox_as_backfill(
    conn: Conn, tiny_models: tuple[str, str]
) -> None:
    """Before a move, as after it: the inbox's keys are counted in the lane the move sends them
    to (a bulk statement's to the backfill lane), by status and by the worker's gauges (QA ops2,
    finding 3: status showed a 50,000-row COPY as pending_live until a worker moved it)."""
    watched(conn, tiny_models[0], "docs")
    conn.execute(
        "INSERT INTO docs SELECT g, 'bulk' FROM generate_series(1, %s::int) g", (BULK + 1,)
    )
    conn.execute("INSERT INTO docs VALUES (%s, 'one row')", (BULK + 2,))
    assert fetch_value(conn, "SELECT count(*) FROM embeddings.inbox") == 2
    assert conn.execute(
        "SELECT pending_jobs, pending_live, pending_backfill FROM embeddings.status"
    ).fetchone() == (BULK + 2, 1, BULK + 1)
    pending = {
        lane: fetch_value(
            conn,
            queries.compose(
                "pending_keys", queue_table=psycopg.sql.Identifier("pgmq", f"q_{lane}")
            ),
            {"queue": lane},
        )
        for lane in ("embedding_jobs", "embedding_jobs_backfill")
    }
    assert pending == {"embedding_jobs": 1, "embedding_jobs_backfill": BULK + 1}
    # what `run --once` waits for: every row the live queue's move takes, both lanes'
    inbox = conn.execute(queries.get("inbox_pending"), {"queue": "embedding_jobs"}).fetchall()
    assert sum(keys for _, _, keys, _ in inbox) == BULK + 2
