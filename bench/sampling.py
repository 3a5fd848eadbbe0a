"""What the latency benches share: waiting for a condition with a deadline, a stamped table's
row's latency from insert to vector, and the summary of a list of latencies (milliseconds) as
the results files record it."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any, LiteralString

import psycopg

from tests.support.fetch import fetch_value


def wait_until(
    condition: Callable[..., object], timeout: float, what: str, poll: float = 0.01
) -> None:
    """Polls `condition` every `poll` seconds until it holds; TimeoutError naming `what` after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(poll)


def wait_embedded(
    conn: psycopg.Connection[Any], table: str, key: int, timeout: float, poll: float = 0.01
) -> None:
    """Waits until row `key` of `table` (stamped_table()) has its vector."""
    wait_until(
        lambda: (
            conn.execute(
                f"SELECT embedded_at IS NOT NULL FROM {table} WHERE id = %s", (key,)
            ).fetchone()
            == (True,)
        ),
        timeout,
        f"row {key}",
        poll,
    )


def embedded_latency(
    conn: psycopg.Connection[Any], table: str, key: int, timeout: float, poll: float = 0.01
) -> float:
    """Waits until row `key` of `table` (stamped_table()) has its vector; the milliseconds from
    its insert to its vector, by the database's clock."""
    wait_embedded(conn, table, key, timeout, poll)
    return float(
        fetch_value(
            conn,
            f"SELECT extract(epoch FROM embedded_at - inserted_at) * 1000 FROM {table}"
            " WHERE id = %s",
            (key,),
        )
    )


def live_latencies(
    conn: psycopg.Connection[Any],
    table: str,
    insert: LiteralString,
    note: str,
    samples: int,
    *,
    go_on: Callable[[], bool],
    pause: Callable[[], float],
    timeout: float,
    poll: float = 0.01,
) -> list[float]:
    """Up to `samples` live single-row inserts into `table` (stamped_table()) by `insert` (its
    one parameter the body, "Live note <i>: <note>"; RETURNING id), each once the previous one
    has its vector and `pause()` seconds have gone by; stops early once `go_on()` is false.
    Their latencies."""
    latencies: list[float] = []
    for i in range(samples):
        if not go_on():
            break
        row = conn.execute(insert, (f"Live note {i}: {note}",))
        key = row.fetchone()
        assert key is not None
        latencies.append(embedded_latency(conn, table, key[0], timeout, poll))
        time.sleep(pause())
    return latencies


def latency_summary(latencies: list[float], mean: bool = False) -> dict[str, Any]:
    """Samples, p50, p95 and max (and the mean, when asked) of latencies in milliseconds."""
    if not latencies:
        return {"samples": 0}
    ordered = sorted(latencies)
    summary: dict[str, Any] = {
        "samples": len(ordered),
        "p50_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 1),
    }
    if mean:
        summary["mean_ms"] = round(statistics.fmean(ordered), 1)
    summary["max_ms"] = round(ordered[-1], 1)
    return summary


def stamped_table(table: str, *columns: str) -> str:
    """SQL creating `table`, whose rows record when they were inserted and when their vector
    was written, both by the database's clock, and its stamping function `{table}_stamp()`;
    `columns` are more of its columns ("name type ..."). stamp_trigger() attaches the function
    once watch() has made the embedding column."""
    more = "".join(f"\n    {column}," for column in columns)
    return f"""
CREATE TABLE {table} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    body text NOT NULL,{more}
    inserted_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    embedded_at timestamptz
);
CREATE FUNCTION {table}_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.embedded_at := clock_timestamp();
    RETURN NEW;
END $$;
"""


def stamp_trigger(table: str) -> str:
    """SQL stamping `table`'s rows (stamped_table()) as their vector is written."""
    return (
        f"CREATE TRIGGER stamp BEFORE UPDATE OF embedding ON {table} FOR EACH ROW"
        f" WHEN (NEW.embedding IS NOT NULL) EXECUTE FUNCTION {table}_stamp()"
    )
