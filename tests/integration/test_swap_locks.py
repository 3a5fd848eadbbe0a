"""Model changes never stall the application (issue 25 §2): the swap, watch() and
cancel_change() ask for a watched table's ACCESS EXCLUSIVE lock in short attempts only
(sql/41_locks.sql), so that a long reader of the table never makes the application's
statements queue behind us."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from tests.integration.test_model_change import in_change, make_table, models, target_model
from worker import exits
from worker import status as status_model
from worker.cli import status
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]

__all__ = ["models"]  # the fixture, used by name

APP_UPDATES = 200


@pytest.fixture
def long_reader(dsn: str) -> Iterator[Conn]:
    """A connection for a transaction that reads the table and stays open (a report, a
    pg_dump): `long_reader.execute(READ)` starts it."""
    with psycopg.connect(dsn) as reader:
        yield reader
        reader.rollback()


READ = "SELECT count(*) FROM docs"


def application_updates(dsn: str, rows: int) -> tuple[list[str], float]:
    """APP_UPDATES single-row UPDATEs as an application with a 500 ms lock_timeout runs them:
    the errors, and the longest statement in seconds."""
    errors: list[str] = []
    longest = 0.0
    with psycopg.connect(dsn, autocommit=True) as app:
        app.execute("SET lock_timeout = '500ms'")
        for i in range(APP_UPDATES):
            started = time.perf_counter()
            try:
                app.execute("UPDATE docs SET body = body WHERE id = %s", (i % rows + 1,))
            except psycopg.Error as error:
                errors.append(str(error))
            longest = max(longest, time.perf_counter() - started)
    return errors, longest


def while_running(body: Callable[[], None], background: Callable[[], object]) -> None:
    """Runs `background` in a loop in a thread for as long as `body` runs."""
    done = threading.Event()
    failures: list[BaseException] = []

    def loop() -> None:
        try:
            while not done.is_set():
                background()
        except BaseException as error:  # reported below
            failures.append(error)

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        body()
    finally:
        done.set()
        thread.join(timeout=60)
    assert failures == []


def test_a_swap_behind_a_long_reader_never_fails_the_application_s_statements(
    conn: Conn,
    dsn: str,
    models: tuple[str, str, str],
    run_once: Callable[..., Worker],
    long_reader: Conn,
) -> None:
    make_table(conn, 20, model=models[0])
    run_once(model=models[0])
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (models[1],))
    long_reader.execute(READ)
    run_once(model=models[0])  # every new vector written; the swap finds the table held
    assert in_change(conn) and target_model(conn) == models[0]
    outcome: dict[str, Any] = {}

    def application() -> None:
        outcome["errors"], outcome["longest"] = application_updates(dsn, 20)

    # The swap retried as fast as it can (the worker backs off between calls; this does not).
    with psycopg.connect(dsn, autocommit=True) as swapper:
        while_running(
            application,
            lambda: swapper.execute("SELECT * FROM embeddings_internal.complete_changes()"),
        )

    assert outcome["errors"] == []
    assert in_change(conn)
    waiting = conn.execute(
        "SELECT swap_attempts, swap_waiting_since IS NOT NULL, swap_holders"
        " FROM embeddings.model_changes"
    ).fetchone()
    assert waiting is not None and waiting[0] > 0 and waiting[1]
    reader_pid = long_reader.info.backend_pid
    assert f"pid {reader_pid} (AccessShareLock" in waiting[2]

    long_reader.rollback()
    result = conn.execute("SELECT result FROM embeddings_internal.complete_changes()").fetchone()
    assert result == ("done",)
    assert target_model(conn) == models[1]


def test_watch_with_another_model_behind_a_long_reader_fails_clearly_without_stalling_writes(
    conn: Conn, dsn: str, models: tuple[str, str, str], long_reader: Conn
) -> None:
    make_table(conn, 20, model=models[0])
    long_reader.execute(READ)
    outcome: dict[str, Any] = {}

    def application() -> None:
        outcome["errors"], outcome["longest"] = application_updates(dsn, 20)

    def change() -> None:
        with psycopg.connect(dsn, autocommit=True) as ddl:
            ddl.execute("SET embeddings.lock_wait = '300ms'")
            try:
                ddl.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (models[1],))
            except psycopg.errors.LockNotAvailable as error:
                outcome["error"] = error

    while_running(application, change)

    assert outcome["errors"] == []
    error = outcome["error"]
    assert "could not lock public.docs" in str(error)
    assert f"pid {long_reader.info.backend_pid}" in str(error)
    assert "embeddings.lock_wait" in (error.diag.message_hint or "")
    assert not in_change(conn)

    long_reader.rollback()
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (models[1],))
    assert in_change(conn)


def test_lock_table_keeps_the_caller_s_lock_timeout(conn: Conn) -> None:
    conn.execute("CREATE TABLE t (id int)")
    conn.execute("SET lock_timeout = '7s'")
    with conn.transaction():
        conn.execute("SELECT embeddings_internal.lock_table('t')")
        assert conn.execute("SHOW lock_timeout").fetchone() == ("7s",)


def test_a_change_started_while_the_old_model_s_jobs_are_held_swaps_only_with_every_vector(
    conn: Conn, models: tuple[str, str, str], run_once: Callable[..., Worker]
) -> None:
    # The old model cannot be loaded: the rows' jobs are deferred (held back, not failed).
    conn.execute(
        "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
        " VALUES ('absent-model', 32, 512, 'mean')"
    )
    make_table(conn, 10, model="absent-model")
    run_once(model=models[0], expect=exits.UNSERVED)
    assert conn.execute("SELECT count(embedding) FROM docs").fetchone() == (0,)

    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (models[1],))
    run_once(model=models[0])

    # Swapped only once every row has its new vector, not with the held rows' vectors missing.
    if target_model(conn) == models[1]:
        assert conn.execute("SELECT count(*) FROM docs WHERE embedding IS NULL").fetchone() == (0,)
    else:
        assert in_change(conn)
    # Once the held jobs come back, everything completes.
    conn.execute("UPDATE pgmq.q_embedding_jobs_backfill SET vt = now()")
    run_once(model=models[0])
    assert target_model(conn) == models[1]
    assert conn.execute("SELECT count(*) FROM docs WHERE embedding IS NULL").fetchone() == (0,)


def test_a_swap_waiting_for_its_lock_shows_in_status_from_its_first_attempt(
    conn: Conn,
    models: tuple[str, str, str],
    run_once: Callable[..., Worker],
    long_reader: Conn,
) -> None:
    """Since when and after how many attempts, as soon as it waits; the alarm (the stopped state
    swap_waiting: doctor, /readyz, the metric) only after embeddings.swap_wait_alarm."""
    make_table(conn, 5, model=models[0])
    run_once(model=models[0])
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (models[1],))
    long_reader.execute(READ)
    run_once(model=models[0])  # every new vector written; the swap finds the table held
    assert in_change(conn)

    (row,) = status_model.fetch(conn)
    assert row["swap_attempts"] >= 1 and row["swap_waiting_since"] is not None
    assert f"pid {long_reader.info.backend_pid}" in row["swap_holders"]
    assert row["stopped"] is None  # no alarm before swap_wait_alarm (1 minute)
    text = "\n".join(status.render([row]))
    assert f"the swap to {models[1]} waits for its table lock since" in text
    assert f"{row['swap_attempts']} attempt(s) so far" in text
    assert f"pid {long_reader.info.backend_pid}" in text

    conn.execute("SET embeddings.swap_wait_alarm = '0'")
    (row,) = status_model.fetch(conn)
    assert [s["state"] for s in row["stopped"]] == ["swap_waiting"]
    text = "\n".join(status.render([row]))
    assert "stopped (swap_waiting)" in text and "waits for its table lock since" not in text
