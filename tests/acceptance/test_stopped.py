"""Every state that stops a target's progress shows, consistently, where operators look
(issue 25 §5): `embed-worker status` (the table and --json's `problem` and `stopped`),
`embed-worker doctor` (counted, with the fix), the worker's /readyz and its
embed_worker_target_stopped metric, all read from embeddings.stopped (sql/52_stopped.sql).
Each state is made for real, with a real worker process running as a least-privilege role."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from tests.support.fetch import wait_for_row
from tests.support.jobs import JOBS
from tests.support.models import MINILM
from tests.support.process import WorkerProcess, run_cli, wait_for

Conn = psycopg.Connection[Any]
TARGET = "public.docs.embedding"


def cli(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env={"DATABASE_URL": dsn})


def make_docs(conn: Conn, rows: int = 5, model: str = MINILM) -> None:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute(
        "INSERT INTO docs SELECT g, 'document ' || g FROM generate_series(1, %s) g", (rows,)
    )
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (model,))


def drained(conn: Conn) -> bool:
    row = conn.execute(f"SELECT count(*) FROM {JOBS}").fetchone()
    missing = conn.execute("SELECT count(*) FROM docs WHERE embedding IS NULL").fetchone()
    return row == (0,) and missing == (0,)


def move_to_minilm(conn: Conn, timeout: float) -> None:
    """docs watched again with a model the worker can load; returns once the change is
    complete and every row embedded."""
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (MINILM,))
    wait_for(
        lambda: (
            drained(conn)
            and conn.execute("SELECT model FROM embeddings.targets").fetchone() == (MINILM,)
        ),
        timeout=timeout,
        what="the change to the loadable model",
    )


def metric(worker: WorkerProcess, state: str) -> float | None:
    text = worker.get("/metrics")[1].decode()
    for line in text.splitlines():
        labels = (f'state="{state}"', f'target="{TARGET}"')
        if line.startswith("embed_worker_target_stopped{") and all(x in line for x in labels):
            return float(line.rsplit(" ", 1)[1])
    return None


def readyz(worker: WorkerProcess) -> dict[str, Any]:
    code, body = worker.get("/readyz")
    assert code == 200, body
    result: dict[str, Any] = json.loads(body)
    return result


def assert_stopped(dsn: str, worker: WorkerProcess, state: str, reason: str) -> None:
    """`state` (its reason containing `reason`) shows in all four places."""
    # /readyz and the metric: refreshed by the worker's keeper every few seconds.
    wait_for(lambda: metric(worker, state) == 1.0, timeout=30, what=f"the {state} metric")
    ready = readyz(worker)
    assert ready["status"] == "degraded", ready
    (stop,) = [s for s in ready["stopped_targets"][TARGET] if s["state"] == state]
    assert reason in stop["reason"] and stop["fix"], stop

    (row,) = json.loads(cli(dsn, "status", "--json").stdout)
    assert reason in row["problem"], row
    (listed,) = [s for s in row["stopped"] if s["state"] == state]
    # (the reason may have moved on meanwhile: a swap's attempts are counted in it)
    assert reason in listed["reason"] and listed["fix"] == stop["fix"]

    text = cli(dsn, "status").stdout
    line = next(x for x in text.splitlines() if x.startswith(TARGET))
    assert " stopped " in f"{line} " and " done " not in f"{line} ", text
    assert f"{TARGET}: stopped ({state}) since" in text and f"  fix: {stop['fix']}" in text

    doctor = cli(dsn, "doctor")
    assert doctor.returncode == 1, doctor.stdout
    assert f"FAIL  target {TARGET}: stopped ({state}): " in doctor.stdout
    assert f"      fix: {stop['fix']}" in doctor.stdout
    failed = sum(x.startswith("FAIL") for x in doctor.stdout.splitlines())
    assert f"\n{failed} problem(s)," in doctor.stdout


def assert_cleared(dsn: str, worker: WorkerProcess, state: str) -> None:
    wait_for(lambda: metric(worker, state) == 0.0, timeout=60, what=f"the {state} metric to clear")
    assert TARGET not in readyz(worker).get("stopped_targets", {})
    (row,) = json.loads(cli(dsn, "status", "--json").stdout)
    assert row["problem"] is None and row["stopped"] is None, row
    assert "stopped (" not in cli(dsn, "doctor").stdout


@pytest.fixture
def worker(start_worker: Callable[..., WorkerProcess]) -> Iterator[Callable[..., WorkerProcess]]:
    def start(**env: Any) -> WorkerProcess:
        process = start_worker(EMBED_POLL_SECONDS=0.5, **env)
        wait_for(lambda: worker_up(process), timeout=60, what="the worker's HTTP server")
        return process

    yield start


def worker_up(process: WorkerProcess) -> bool:
    if process.proc.poll() is not None:
        raise RuntimeError(f"worker exited early:\n{process.log_text()}")
    try:
        return process.get("/healthz")[0] == 200
    except OSError:
        return False


@pytest.mark.parametrize("event_triggers", [True, False])
def test_a_dropped_content_column(
    conn: Conn, dsn: str, worker: Callable[..., WorkerProcess], event_triggers: bool
) -> None:
    make_docs(conn)
    running = worker()
    wait_for(lambda: drained(conn), timeout=60, what="the rows embedded")
    if not event_triggers:  # as installed by a role that is not a superuser
        conn.execute("ALTER EVENT TRIGGER embeddings_follow_schema_changes DISABLE")
        conn.execute("ALTER EVENT TRIGGER embeddings_forget_dropped DISABLE")

    conn.execute("ALTER TABLE docs DROP COLUMN body")

    assert_stopped(dsn, running, "problem", "content column body was dropped")
    conn.execute("ALTER TABLE docs ADD COLUMN body text")
    conn.execute("UPDATE docs SET body = 'back again ' || id")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (MINILM,))
    assert_cleared(dsn, running, "problem")


def test_jobs_held_because_the_model_cannot_be_loaded(
    conn: Conn, dsn: str, worker: Callable[..., WorkerProcess]
) -> None:
    conn.execute(
        "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
        " VALUES ('absent-model', 384, 512, 'mean')"
    )
    make_docs(conn, model="absent-model")
    running = worker()

    assert_stopped(dsn, running, "held", "absent-model")
    # The fix names the statements that make the rows embedded (issue 37): the model fetched,
    # or the table moved to a model the worker has, or the default set before watch().
    (row,) = json.loads(cli(dsn, "status", "--json").stdout)
    (held,) = [s for s in row["stopped"] if s["state"] == "held"]
    # Registered by hand, not one the worker can download: found on EMBED_MODEL_PATH only.
    assert "EMBED_MODEL_PATH naming a directory that holds absent-model/" in held["fix"], held
    assert "model download" not in held["fix"], held
    assert "SELECT embeddings.watch('public.docs', 'body', model => 'NAME')" in held["fix"], held
    assert "SELECT embeddings.set_default_model(" in held["fix"], held
    # A model it can load: a change, which the worker completes (the old model never loads).
    move_to_minilm(conn, timeout=120)
    assert_cleared(dsn, running, "held")


def test_a_swap_waiting_behind_a_long_transaction(
    conn: Conn, dsn: str, worker: Callable[..., WorkerProcess]
) -> None:
    conn.execute(f"ALTER DATABASE {conn.info.dbname} SET embeddings.swap_wait_alarm = '0'")
    make_docs(conn)
    running = worker()
    wait_for(lambda: drained(conn), timeout=60, what="the rows embedded")
    conn.execute("SELECT embeddings.rewatch('docs')")  # re-embed blue/green, same model
    with psycopg.connect(dsn) as reader:
        reader.execute("SELECT count(*) FROM docs")  # and stays open

        assert_stopped(dsn, running, "swap_waiting", f"pid {reader.info.backend_pid}")
        reader.rollback()
    wait_for_row(conn, "SELECT count(*) FROM embeddings.model_changes", (0,), 90, "the swap")
    assert_cleared(dsn, running, "swap_waiting")


def test_a_stalled_backfill(conn: Conn, dsn: str, worker: Callable[..., WorkerProcess]) -> None:
    conn.execute(f"ALTER DATABASE {conn.info.dbname} SET embeddings.backfill_stall_alarm = '0'")
    make_docs(conn, rows=2500)  # watch() queues a first step of 1,000; a backfill goes on
    with psycopg.connect(dsn) as stepper:
        # Held, as by a stepper that hangs: no worker can take it (SKIP LOCKED).
        stepper.execute("SELECT FROM embeddings.backfills FOR UPDATE")
        running = worker()

        assert_stopped(dsn, running, "backfill_stalled", "its backfill has queued no rows")
        stepper.rollback()
    wait_for_row(
        conn, "SELECT count(*) FROM embeddings.backfills", (0,), 120, "the backfill to end"
    )
    assert_cleared(dsn, running, "backfill_stalled")


def test_a_document_over_its_ceiling(
    conn: Conn, dsn: str, worker: Callable[..., WorkerProcess]
) -> None:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs VALUES (1, 'A short one.'), (2, repeat('a long one ', 500))")
    conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s, chunk_tokens => 64)", (MINILM,)
    )
    running = worker(EMBED_MAX_DOCUMENT_BYTES=1000)

    assert_stopped(dsn, running, "over_ceiling", "longer than the ceiling of 1000 bytes")
    # Shortened: its job embeds it, and the state goes.
    conn.execute("UPDATE docs SET body = 'Shorter now.' WHERE id = 2")
    wait_for_row(
        conn,
        "SELECT count(DISTINCT id) FROM docs_chunks",
        (2,),
        60,
        "the shortened document embedded",
    )
    assert_cleared(dsn, running, "over_ceiling")


def test_held_jobs_are_taken_at_once_by_a_worker_that_can_serve_them(
    conn: Conn, tmp_path: Any, start_worker: Callable[..., WorkerProcess]
) -> None:
    """issue 37: a worker without the model holds the rows (put back for a minute, without an
    attempt); a worker that has it, started next, took them only when that minute was over.
    Now it takes them as it starts: well within the minute."""
    make_docs(conn, rows=20)
    empty = tmp_path / "no-models"
    empty.mkdir()
    without = start_worker(http=False, EMBED_MODEL_PATH=str(empty), EMBED_OFFLINE="1")
    wait_for(
        lambda: (
            conn.execute(
                f"SELECT count(*) FROM {JOBS} WHERE vt > clock_timestamp() + interval '30 seconds'"
            ).fetchone()
            not in ((0,), None)
        ),
        timeout=60,
        what="the jobs held by the worker without the model",
    )
    without.signal()
    assert without.wait_exit(60) == 0
    assert conn.execute("SELECT count(embedding) FROM docs").fetchone() == (0,)

    started = time.monotonic()
    start_worker(http=False)
    wait_for(lambda: drained(conn), timeout=30, what="the held rows embedded")
    assert time.monotonic() - started < 30  # the held jobs' own wait was a minute


def test_held_rows_of_a_table_moved_to_a_model_the_worker_has_are_embedded_at_once(
    conn: Conn, dsn: str, worker: Callable[..., WorkerProcess]
) -> None:
    """A worker without the table's model holds its rows (put back for a minute). Moving the
    table to a model the worker has (a model change, which it completes) makes its held jobs
    servable: they are taken at once, not after their minute (issue 37's 15 s)."""
    conn.execute(
        "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
        " VALUES ('absent-model', 384, 512, 'mean')"
    )
    make_docs(conn, rows=20, model="absent-model")
    running = worker()
    wait_for(lambda: metric(running, "held") == 1.0, timeout=30, what="the rows held")

    moved = time.monotonic()
    move_to_minilm(conn, timeout=90)
    assert time.monotonic() - moved < 15, running.log_text()[-4000:]
