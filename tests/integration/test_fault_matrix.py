"""The fault-injection harness: the worker fails at each step of a batch, then recovers.

Each cell of the matrix is one step of a batch's life crossed with one fault:

  steps   read           inside the statement that leases the batch (before it commits)
          leased         the lease committed, nothing loaded yet
          load           before the content is loaded
          embed          before inference
          after_vectors  in the write transaction: vectors stored, jobs not yet settled
          commit         at COMMIT of the write transaction (a deferred constraint trigger)
  faults  connection_killed  the worker's connections are terminated there (pg_terminate_backend:
                             a failover, a network cut); at `read` and `commit` the backend
                             terminates itself from a trigger, exactly there
          worker_crash       the worker dies there: an exception no stage handles (in-process
                             stand-in for a crash); at `read` and `commit` the statement fails

Scenario per cell: rows embedded once, then every row's content changed (the old vectors stay:
clear_on_update => false, so a job acknowledged without its write leaves a *stale* vector) and new
rows inserted (a job acknowledged without its write leaves them *lost*). The faulty run is hit
once, and while it is hit a row is edited again. Then the worker recovers: leases are expired (what
waiting EMBED_VT_SECONDS would do) and the worker runs again until the queue is empty. Asserted:
0 rows lost, 0 stale vectors, nothing left in the queue, nothing dead-lettered. The matrix is
printed at the end of the run (tests/support/faultmatrix.py) for the README's Reliability section.

Every cell runs once per store of the vectors (tests/support/stores.py): in the row, and in a side
table (its cells' steps are marked "side table").
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.support import faultmatrix, stores
from tests.support.fault_scenario import (
    NEW_ROWS,
    ROWS,
    InjectedCrash,
    Scenario,
    assert_nothing_lost,
    terminate_worker_connections,
)
from worker.pipeline import faults

Conn = psycopg.Connection[Any]

STEPS = ("read", "leased", "load", "embed", "after_vectors", "commit")
FAULTS = ("connection_killed", "worker_crash")
DB_SIDE_STEPS = {"read", "commit"}  # injected by a trigger inside the database


def arm_in_database(conn: Conn, step: str, fault: str, store: str) -> None:
    """A trigger that fails the first queue lease (`read`) or the first write COMMIT (`commit`)
    that reaches it (of a vector into the row, or into the side table). A sequence counts, since
    it survives the rollback it causes."""
    action = (
        "PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(5);"
        if fault == "connection_killed"
        else "RAISE EXCEPTION 'injected fault at %', TG_ARGV[0];"
    )
    conn.execute("CREATE SEQUENCE injected_faults")
    conn.execute(
        # (qualified: it fires in the worker's session too, whose path is pg_catalog's only)
        f"""CREATE FUNCTION inject_fault() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF nextval('public.injected_faults') = 1 THEN
                UPDATE public.docs SET body = 'edited while the worker failed' WHERE id = 1;
                {action}
            END IF;
            RETURN NULL;
        END $$"""
    )
    if step == "read":
        # Runs as the worker's lease statement: the edit happens in the statement that fails,
        # so it rolls back too; the in-process steps edit from another connection instead.
        conn.execute(
            "CREATE TRIGGER inject_fault AFTER UPDATE ON pgmq.q_embedding_jobs"
            " FOR EACH ROW EXECUTE FUNCTION inject_fault('read')"
        )
    else:
        conn.execute(
            f"CREATE CONSTRAINT TRIGGER inject_fault AFTER INSERT OR UPDATE"
            f" ON {stores.vector_table(conn, store)}"
            " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW"
            " WHEN (NEW.embedding IS NOT NULL) EXECUTE FUNCTION inject_fault('commit')"
        )


class Editor:
    """Edits row 1 from an application connection of its own, in a thread: at `after_vectors`
    the write transaction holds that row's lock, and the edit waits for it as an application's
    UPDATE would."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def start(self) -> None:
        thread = threading.Thread(target=self._edit, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _edit(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute("UPDATE docs SET body = 'edited while the worker failed' WHERE id = 1")
        except BaseException as exc:  # reported by join(): no application statement may fail
            self.errors.append(exc)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=30)
            assert not thread.is_alive(), "the application's edit never finished"
        assert self.errors == []


def in_process_fault(admin: Conn, editor: Editor, fault: str) -> Callable[[], None]:
    """A one-shot handler for a worker.pipeline.faults point."""
    fired = False

    def handler() -> None:
        nonlocal fired
        if fired:
            return
        fired = True
        editor.start()
        if fault == "connection_killed":
            terminate_worker_connections(admin)
        else:
            raise InjectedCrash("injected crash")

    return handler


@pytest.mark.parametrize("store", stores.STORES)
@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("step", STEPS)
def test_a_fault_at_each_step_loses_nothing(
    step: str, fault: str, store: str, fault_scenario: Scenario, admin: Conn, dsn: str
) -> None:
    conn = fault_scenario.conn
    fault_scenario.embed_then_change(store)

    editor = Editor(dsn)
    if step in DB_SIDE_STEPS:
        arm_in_database(conn, step, fault, store)
        exit_code = fault_scenario.run_worker()
        fired = conn.execute("SELECT is_called FROM injected_faults").fetchone()
        assert fired == (True,), "the fault was never reached"
    else:
        handler = in_process_fault(admin, editor, fault)
        with faults.injected(step, handler):
            exit_code = fault_scenario.run_worker()
        editor.join()

    fault_scenario.recover()
    rows = conn.execute(
        psycopg.sql.SQL(
            "SELECT id, body, embedding::real[] FROM {} WHERE body ~ '[^[:space:]]' ORDER BY id"
        ).format(stores.vectors(conn, store))
    ).fetchall()
    label = step if store == "row" else f"{step} (side table)"
    cell = fault_scenario.measure(rows, label, fault, exit_code)
    faultmatrix.record(cell)
    assert_nothing_lost(cell, ROWS + NEW_ROWS)
