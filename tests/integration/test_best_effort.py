"""db.best_effort(): a refused statement is rolled back to its savepoint and logged (redacted);
the caller's transaction goes on; a lost connection and a bug are not swallowed."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import pytest

from worker import db

Conn = psycopg.Connection[Any]
log = logging.getLogger("tests.best_effort")


def test_a_refusal_is_rolled_back_logged_redacted_and_the_transaction_goes_on(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TEMP TABLE notes (n int)")
        with conn.transaction():
            conn.execute("INSERT INTO notes VALUES (1)")
            with caplog.at_level(logging.WARNING), db.best_effort(conn, "noting", log) as attempt:
                conn.execute("INSERT INTO notes VALUES (2)")
                conn.execute(
                    "DO $$ BEGIN RAISE EXCEPTION 'see postgresql://app:hunter2@db/x'; END $$"
                )
            assert attempt.failed
            conn.execute("INSERT INTO notes VALUES (3)")
        assert [r[0] for r in conn.execute("SELECT n FROM notes ORDER BY n")] == [1, 3]
    (record,) = [r for r in caplog.records if r.name == log.name]
    assert record.getMessage().startswith("noting: see postgresql://app:***@db/x")
    assert "hunter2" not in caplog.text


def test_a_block_that_succeeds_is_kept(dsn: str) -> None:
    with psycopg.connect(dsn) as conn, conn.transaction():
        conn.execute("CREATE TEMP TABLE notes (n int)")
        with db.best_effort(conn, "noting", log) as attempt:
            conn.execute("INSERT INTO notes VALUES (1)")
        assert not attempt.failed
        assert conn.execute("SELECT count(*) FROM notes").fetchone() == (1,)


def test_a_lost_connection_and_a_bug_propagate(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        with pytest.raises(ValueError), db.best_effort(conn, "noting", log):
            raise ValueError("a bug is not the database refusing")
        with pytest.raises(psycopg.OperationalError), db.best_effort(conn, "noting", log):
            conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
