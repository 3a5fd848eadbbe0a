"""API keys are secrets: never in the database, logs, metrics, `status`, `doctor`, `model list`
or error messages, even when the provider echoes the key back in its error text (some do)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from prometheus_client import generate_latest

from tests.integration.test_providers import drain
from tests.support.process import wait_for
from tests.support.provider_server import ProviderServer
from worker import metrics
from worker.models.remote import breaker as breakers
from worker.models.remote import client
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]
KEY = "sk-proj-SECRETabcdefghijklmnop0123456789"
PARTS = (KEY, KEY[:12], KEY[-12:], "SECRETabcdefghij")


def leaks(text: str) -> list[str]:
    return [part for part in PARTS if part in text]


@pytest.fixture
def keyed_provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[ProviderServer]:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setattr(client, "BACKOFF", lambda state: 0.01)
    breakers.reset()
    with ProviderServer(kind="openai", dims=8, api_key=KEY) as server:
        server.echo_key_in_errors = True  # a 400 or 401 answer carries the key it was sent
        yield server
    breakers.reset()


def everything_in_the_database(conn: Conn) -> str:
    """Every row of every table and the definition of every function, as text."""
    tables = conn.execute(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p') AND n.nspname IN ('embeddings', 'pgmq', 'public')"
    ).fetchall()
    parts = [
        str(conn.execute(f"SELECT coalesce(string_agg(t::text, ' '), '') FROM {name} t").fetchone())
        for (name,) in tables
    ]
    functions = conn.execute(
        "SELECT string_agg(prosrc, ' ') FROM pg_proc p JOIN pg_namespace n"
        " ON n.oid = p.pronamespace WHERE n.nspname = 'embeddings'"
    ).fetchone()
    return " ".join([*parts, str(functions)])


def test_the_key_goes_only_where_it_is_sent(
    conn: Conn,
    dsn: str,
    run_once: Callable[..., Worker],
    keyed_provider: ProviderServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    conn.execute(
        "SELECT embeddings.register_model('remote-8', 8, 'openai', %s, 'test-model',"
        " price_per_million_tokens => 0.02)",
        (keyed_provider.base_url,),
    )
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs VALUES (1, 'fine'), (2, 'POISON echoes the key'), (3, 'ok')")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'remote-8')")
    drain(conn, run_once)

    # The key was sent, and the provider echoed it in the refusal of row 2.
    assert keyed_provider.requests[0]["authorization"] == f"Bearer {KEY}"
    (error,) = conn.execute("SELECT last_error FROM embeddings.failures").fetchone() or ("",)
    assert "POISON is not allowed" in error and "***" in error

    # A wrong key next: the 401's message echoes it too; the target waits with that error.
    os.environ["OPENAI_API_KEY"] = KEY[:-4] + "WXYZ"
    conn.execute("UPDATE docs SET body = 'changed' WHERE id = 1")
    run_once(max_attempts=1)
    reason = wait_for(
        lambda: conn.execute(
            "SELECT deferred_reason FROM embeddings.target_status(true)"
        ).fetchone()[0],  # type: ignore[index]
        what="the target deferred",
    )
    assert "credential 'openai' was refused" in reason

    seen = {
        "database": everything_in_the_database(conn),
        "logs": caplog.text,
        "metrics": generate_latest(metrics.REGISTRY).decode(),
    }
    env = {**os.environ, "DATABASE_URL": dsn, "OPENAI_API_KEY": KEY}
    for command in (["status"], ["status", "--json"], ["doctor"], ["model", "list"]):
        from tests.integration.test_cli import run_cli

        done = run_cli(*command, env=env)
        seen[" ".join(command)] = done.stdout + done.stderr
    assert "remote-8" in seen["model list"]
    assert {where: leaks(text) for where, text in seen.items() if leaks(text)} == {}


def test_register_model_refuses_an_endpoint_that_carries_a_key(conn: Conn) -> None:
    for endpoint in (
        f"https://user:{KEY}@api.example.com/v1",
        f"https://api.example.com/v1?api_key={KEY}",
        f"https://api.example.com/models/x?token={KEY}",
    ):
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="carries a credential"):
            conn.execute(
                "SELECT embeddings.register_model('leaky', 8, 'openai', %s, 'm')", (endpoint,)
            )
    assert leaks(everything_in_the_database(conn)) == []
