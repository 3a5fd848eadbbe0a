"""`status`'s rate and ETA agree with what the worker does (issue 37: during a 35 s drain at about
50 rows/s, status showed 2.2/s and 9.2/s and an ETA of 7.8 h, then 19.9 min: its rate divided a
drain's rows by at least a minute, from the start of the minute the drain began in).

The real rate is the test's own: rows that got a vector, counted twice a few seconds apart while
the worker drains. No speed is asserted: only that status says what the rows show.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import psycopg

from tests.support.process import WorkerProcess, wait_for

Conn = psycopg.Connection[Any]
ROWS = 40_000  # more than any machine embeds in the seconds the test watches


def embedded(conn: Conn) -> int:
    row = conn.execute("SELECT count(embedding) FROM docs").fetchone()
    assert row is not None
    return int(row[0])


def status_of(dsn: str) -> dict[str, Any]:
    shown = subprocess.run(
        [sys.executable, "-m", "worker", "status", "--json", "--exact"],
        env={**os.environ, "DATABASE_URL": dsn},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    (row,) = json.loads(shown.stdout)
    return dict(row)


def test_rate_and_eta_ten_seconds_into_a_drain_are_the_rows_own(
    conn: Conn, dsn: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'all-MiniLM-L6-v2')")
    conn.execute(
        "INSERT INTO docs SELECT g, 'row ' || g || ' of a drain long enough to be watched'"
        " FROM generate_series(1, %s) g",
        (ROWS,),
    )
    worker = start_worker(http=False)
    wait_for(lambda: embedded(conn) > 0, timeout=120, what="the first rows embedded")
    drain_began = time.monotonic()
    wait_for(
        lambda: time.monotonic() - drain_began >= 10, timeout=20, interval=0.2, what="10 s of drain"
    )

    first, first_at = embedded(conn), time.monotonic()
    wait_for(lambda: time.monotonic() - first_at >= 3, timeout=10, interval=0.2, what="3 s more")
    shown = status_of(dsn)
    second, second_at = embedded(conn), time.monotonic()
    worker.stop()

    real_rate = (second - first) / (second_at - first_at)
    assert second < ROWS, "the drain ended while watched: make ROWS larger"
    assert real_rate > 0
    assert real_rate / 2 <= shown["rows_per_second"] <= real_rate * 2, (shown, real_rate)
    real_eta = (ROWS - second) / real_rate
    assert shown["eta_seconds"] is not None
    assert real_eta / 2 <= shown["eta_seconds"] <= real_eta * 2, (shown, real_eta)
