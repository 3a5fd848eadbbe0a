"""A wrong password is not a database that is down (issue 37): the worker keeps retrying, as a
service should, but logs at ERROR "authentication failed for user X: check the password", and
`doctor` says the same instead of "set DATABASE_URL", which was set."""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests.support.cluster import Cluster, free_port
from tests.support.process import run_cli, wait_for
from worker import conninfo, db, exceptions, outages, sessions
from worker.backoff import Backoff


@pytest.fixture
def password_user(cluster: Cluster, dsn: str) -> Iterator[str]:
    """A role that must give its password (scram), on this cluster that otherwise trusts."""
    role = f"pw_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(cluster.admin_dsn, autocommit=True) as admin:
        hba_row = admin.execute("SHOW hba_file").fetchone()
        assert hba_row is not None
        hba = Path(hba_row[0])
        if not hba.is_file():
            pytest.skip("the server's pg_hba.conf is not on this machine")
        before = hba.read_text()
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'right'")
        hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n{before}")
        admin.execute("SELECT pg_reload_conf()")
    try:
        yield make_conninfo(dsn, user=role, password="wrong")
    finally:
        hba.write_text(before)
        with psycopg.connect(cluster.admin_dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_reload_conf()")
            admin.execute(f"DROP ROLE IF EXISTS {role}")


def test_a_wrong_password_is_named_and_retried_at_error(
    password_user: str, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(exceptions.AuthenticationFailed, match="authentication failed for user"):
        db.connect(password_user)

    stop = threading.Event()
    session = sessions.Session(password_user, "test", stop, deadline=1.5)
    with (
        caplog.at_level(logging.WARNING, logger="worker.db"),
        pytest.raises(exceptions.AuthenticationFailed),
    ):
        session.get()  # retried until the deadline, as a service retries until stopped
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert retries and all(r.levelno == logging.ERROR for r in retries)
    assert "check the password" in retries[0].getMessage()
    assert "database unavailable" not in caplog.text


def test_a_wrong_password_is_looked_at_once_by_the_probe_then_left_to_the_backoff(
    password_user: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The probe looks often for a database that does not answer (worker/outages.py); one that
    answers and refuses does not end by itself: the probe looks once, then leaves it to the
    sessions' own backoff rather than knock four times a second at a server that logs every
    refused login."""
    looks: list[str] = []
    look = outages._look

    def counted(dsn: str, *args: Any) -> Any:
        looks.append(dsn)
        return look(dsn, *args)

    monkeypatch.setattr(outages, "_look", counted)
    monkeypatch.setattr(sessions, "RECONNECT", Backoff(0.2, 0.2))
    stop = threading.Event()
    session = sessions.Session(password_user, "test", stop)

    def get() -> None:
        with contextlib.suppress(exceptions.AuthenticationFailed):  # (its end, once stopped)
            session.get()

    thread = threading.Thread(target=get, daemon=True)
    with caplog.at_level(logging.ERROR, logger="worker.sessions"):
        thread.start()
        try:
            wait_for(lambda: looks, timeout=30, what="the probe's first look")
            retried = len(caplog.records)
            wait_for(
                lambda: len(caplog.records) >= retried + 8,
                timeout=30,
                what="the session retrying (2 s: 8 looks of a probe still knocking)",
            )
        finally:
            stop.set()
            thread.join(timeout=10)
    assert looks == [password_user]


def test_doctor_says_to_check_the_password(password_user: str) -> None:
    result = run_cli("doctor", env={"DATABASE_URL": password_user})

    assert result.returncode == 1
    assert "authentication failed for user" in result.stdout
    assert "check the password" in result.stdout
    assert "set DATABASE_URL" not in result.stdout


def test_doctor_says_why_it_cannot_connect(dsn: str) -> None:
    """With the database down, doctor said `fix: set DATABASE_URL (or --database-url)`, which
    was set, and printed the server's message with a literal \\n\\t."""
    down = make_conninfo(dsn, port=free_port())
    result = run_cli("doctor", env={"DATABASE_URL": down})
    assert result.returncode == 1
    assert "\\n" not in result.stdout and "\\t" not in result.stdout, result.stdout
    assert "set DATABASE_URL" not in result.stdout
    assert "runs and accepts connections from here" in result.stdout

    missing = make_conninfo(dsn, dbname=f"gone_{uuid.uuid4().hex[:8]}")
    result = run_cli("doctor", env={"DATABASE_URL": missing})
    assert result.returncode == 1
    assert "does not exist" in result.stdout
    assert "create the database" in result.stdout and "set DATABASE_URL" not in result.stdout


def test_doctor_says_to_set_database_url_when_nothing_names_a_database() -> None:
    env = {name: "" for name in ("DATABASE_URL", *conninfo.PG_ENV)}
    result = run_cli("doctor", env={**env, "DEVDB_PORT": str(free_port())})
    assert result.returncode == 1
    assert "set DATABASE_URL (or --database-url)" in result.stdout, result.stdout
