"""The scenario both fault matrices share (tests/integration/test_fault_matrix.py and
test_schema_change_matrix.py): rows embedded once, their content changed and rows added, a faulty
run, recovery, and the count of what was lost or left stale.

The old vectors stay (clear_on_update => false), so a job acknowledged without its write leaves a
*stale* vector; a new row whose job was acknowledged without its write is *lost*.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg

from tests.support import faultmatrix
from tests.support.in_flight import in_process_worker
from tests.support.jobs import JOBS, expire_leases
from worker import db
from worker.config import Settings
from worker.models.loaded import LoadedModels

Conn = psycopg.Connection[Any]

ROWS = 12
NEW_ROWS = 4


class InjectedCrash(BaseException):
    """Escapes every handler of the worker, as a crash would."""


def terminate_worker_connections(admin: Conn) -> None:
    """Terminates the worker's connections to this database and waits until they are gone."""
    victims = [
        pid
        for (pid,) in admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = %s",
            (db.APPLICATION_NAME,),
        ).fetchall()
    ]
    admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) pid", (victims,))
    deadline = time.monotonic() + 10
    while admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (victims,)
    ).fetchone() != (0,):
        assert time.monotonic() < deadline, "connections survived pg_terminate_backend"
        time.sleep(0.01)


def run_worker(settings: Settings, embedders: LoadedModels) -> int:
    return in_process_worker(settings, embedders, once=True).run()


def one_shot(body: Callable[[], None]) -> Callable[[], None]:
    """A handler for a worker.pipeline.faults point that runs `body` the first time only."""
    fired = False

    def handler() -> None:
        nonlocal fired
        if not fired:
            fired = True
            body()

    return handler


def embed_then_change(
    conn: Conn, settings: Settings, embedders: LoadedModels, model: str, store: str
) -> None:
    """`docs` watched in `store` and embedded once; then every row's content changed (the old
    vectors stay) and NEW_ROWS rows inserted, all of them waiting for the faulty run."""
    embedding = f", embedding halfvec({embedders.get(model).dim})" if store == "row" else ""
    conn.execute(f"CREATE TABLE docs (id bigint PRIMARY KEY, body text{embedding})")
    conn.execute(
        "INSERT INTO docs SELECT g, 'first text of row ' || g FROM generate_series(1, %s::int) g",
        (ROWS,),
    )
    conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s, clear_on_update => false,"
        " store => %s)",
        (model, store),
    )
    assert run_worker(settings, embedders) == 0
    conn.execute("UPDATE docs SET body = 'second text of row ' || id")  # old vectors stay
    conn.execute(
        "INSERT INTO docs SELECT g, 'new row ' || g FROM generate_series(%s::int, %s::int) g",
        (ROWS + 1, ROWS + NEW_ROWS),
    )


def recover(conn: Conn, settings: Settings, embedders: LoadedModels) -> None:
    """The leases of the failed run run out (what waiting EMBED_VT_SECONDS would do); the worker
    drains what is left."""
    for _ in range(3):
        expire_leases(conn)
        assert run_worker(settings, embedders) == 0
        if conn.execute(f"SELECT count(*) FROM {JOBS}").fetchone() == (0,):
            break


def measure(
    conn: Conn,
    embedders: LoadedModels,
    model: str,
    rows: Sequence[tuple[Any, str, list[float] | None]],
    step: str,
    fault: str,
    exit_code: int,
) -> faultmatrix.Cell:
    """The cell of (step, fault): `rows` are (key, content, stored vector) of every row with
    content; a row without a vector is lost unless a job or a dead letter still holds it."""
    queued = {
        str(k)
        for (k,) in conn.execute(
            f"SELECT k #>> '{{}}' FROM {JOBS}, embeddings_internal.message_keys(message) k"
        ).fetchall()
    }
    dead = {
        str(k)
        for (k,) in conn.execute("SELECT row_key #>> '{}' FROM embeddings.failures").fetchall()
    }
    expected = embedders.get(model).embed([body for _, body, _ in rows])
    lost = stale = 0
    for (key, _, stored), want in zip(rows, expected, strict=True):
        if stored is None:
            lost += str(key) not in queued and str(key) not in dead
        elif not np.allclose(np.array(stored, dtype=np.float32), want, atol=2e-3):
            stale += 1
    left = conn.execute(f"SELECT count(*) FROM {JOBS}").fetchone()
    assert left is not None
    return faultmatrix.Cell(
        step=step,
        fault=fault,
        rows=len(rows),
        lost=lost,
        stale=stale,
        left_in_queue=int(left[0]),
        dead_lettered=len(dead),
        worker_exit=exit_code,
    )


def assert_nothing_lost(cell: faultmatrix.Cell, rows: int) -> None:
    assert cell.rows == rows
    assert (cell.lost, cell.stale, cell.left_in_queue, cell.dead_lettered) == (0, 0, 0, 0), cell


@dataclass(frozen=True)
class Scenario:
    """One cell's scenario: `settings` put every row in one batch, so a fault hits all of them."""

    conn: Conn
    settings: Settings
    embedders: LoadedModels
    model: str

    @classmethod
    def of(cls, conn: Conn, settings: Settings, embedders: LoadedModels, model: str) -> Scenario:
        one_batch = settings.with_overrides(batch_size=ROWS + NEW_ROWS, max_attempts=5)
        return cls(conn, one_batch, embedders, model)

    def run_worker(self) -> int:
        return run_worker(self.settings, self.embedders)

    def embed_then_change(self, store: str) -> None:
        embed_then_change(self.conn, self.settings, self.embedders, self.model, store)

    def recover(self) -> None:
        recover(self.conn, self.settings, self.embedders)

    def measure(
        self,
        rows: Sequence[tuple[Any, str, list[float] | None]],
        step: str,
        fault: str,
        exit_code: int,
    ) -> faultmatrix.Cell:
        return measure(self.conn, self.embedders, self.model, rows, step, fault, exit_code)
