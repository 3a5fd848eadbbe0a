"""API keys are secrets: never in the database, logs, metrics, `status`, `doctor`, `model list`
or error messages, even when the provider echoes the key back in its error text (some do)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import generate_latest

from tests.integration.test_providers import drain
from tests.support.jobs import deferred_reason, messages
from tests.support.provider_server import ProviderServer
from worker import exits, metrics
from worker.cli import doctor
from worker.cli.findings import Finding
from worker.config import Settings
from worker.models.remote import breaker as breakers
from worker.models.remote import client
from worker.process.runner import Worker
from worker.secret import Secret

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
        " ON n.oid = p.pronamespace WHERE n.nspname IN ('embeddings', 'embeddings_internal')"
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
    run_once(max_attempts=1, expect=exits.UNSERVED)
    reason = deferred_reason(conn)
    assert "credential 'openai' was refused" in reason

    seen = {
        "database": everything_in_the_database(conn),
        "logs": caplog.text,
        "metrics": generate_latest(metrics.REGISTRY).decode(),
    }
    env = {**os.environ, "DATABASE_URL": dsn, "OPENAI_API_KEY": KEY}
    for command in (["status"], ["status", "--json"], ["doctor"], ["model", "list"]):
        from tests.support.process import run_cli

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


ROTATED = "sk-proj-ROTATEDzyxwvutsrqponm9876543210"
ENV_KEY = "sk-proj-ENVIRONMENTvariable0123456789"


def test_a_key_file_is_used_before_the_environment_and_rotated_without_a_restart(
    conn: Conn,
    run_once: Callable[..., Worker],
    keyed_provider: ProviderServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """EMBED_API_KEY_DIR/openai (a mounted Kubernetes secret) wins over OPENAI_API_KEY; the file
    is read before each request, so a rotated secret is sent from the next request on by the
    same loaded model; without the file, OPENAI_API_KEY again."""
    monkeypatch.setenv("EMBED_API_KEY_DIR", str(tmp_path))
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    (tmp_path / "openai").write_text(KEY + "\n")
    conn.execute(
        "SELECT embeddings.register_model('remote-8', 8, 'openai', %s, 'test-model')",
        (keyed_provider.base_url,),
    )
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs VALUES (1, 'one'), (2, 'two')")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'remote-8')")
    drain(conn, run_once)
    assert {r["authorization"] for r in keyed_provider.requests} == {f"Bearer {KEY}"}

    for n, key in enumerate([ROTATED, ENV_KEY], start=3):
        if key == ROTATED:
            (tmp_path / "openai").write_text(ROTATED)
        else:
            (tmp_path / "openai").unlink()
        keyed_provider.api_key = key  # the provider accepts only the new key from now on
        keyed_provider.requests.clear()
        conn.execute("INSERT INTO docs VALUES (%s, 'more')", (n,))
        drain(conn, run_once)
        assert [r["authorization"] for r in keyed_provider.requests] == [f"Bearer {key}"]
    assert conn.execute("SELECT count(*) FROM docs WHERE embedding IS NULL").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)


@pytest.mark.parametrize("problem", ["unreadable", "not text", "missing"])
def test_a_key_file_that_cannot_be_used_defers_the_target_with_a_clear_error(
    conn: Conn,
    run_once: Callable[..., Worker],
    keyed_provider: ProviderServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    problem: str,
) -> None:
    """The target waits (deferred, nothing dead-lettered, no request sent) with an error that
    names the file and what is wrong, never its content."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("EMBED_API_KEY_DIR", str(tmp_path))
    monkeypatch.delenv("OPENAI_API_KEY")
    path = tmp_path / "openai"
    if problem == "unreadable":  # a symlink loop: unreadable even by root
        path.symlink_to(path)
    elif problem == "not text":
        path.write_bytes(b"\xfe\xff" + KEY.encode())
    expected = {
        "unreadable": f"cannot read {path}: Too many levels of symbolic links",
        "not text": f"{path} is not UTF-8 text",
        "missing": f"no API key for credential 'openai': set {path} or OPENAI_API_KEY",
    }[problem]
    conn.execute(
        "SELECT embeddings.register_model('remote-8', 8, 'openai', %s, 'test-model')",
        (keyed_provider.base_url,),
    )
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs VALUES (1, 'one')")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'remote-8')")
    run_once(max_attempts=1, expect=exits.UNSERVED)
    (reason,) = conn.execute(
        "SELECT deferred_reason FROM embeddings_internal.target_status(true)"
    ).fetchone() or (None,)
    assert reason is not None and expected in reason, reason
    assert keyed_provider.requests == []
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)
    assert len(messages(conn)) == 1
    assert leaks(reason + caplog.text + everything_in_the_database(conn)) == []


def test_doctor_says_which_key_a_remote_model_lacks_and_where_to_put_it(
    conn: Conn, dsn: str, tmp_path: Path
) -> None:
    """doctor checks a watched remote model's key, not a model directory on disk: where the key
    was found (never the key), or which credential is missing and the file or variable that
    would hold it."""
    conn.execute(
        "SELECT embeddings.register_model('remote-8', 8, 'openai', 'https://api.example.com/v1',"
        " 'test-model')"
    )
    conn.execute(
        "SELECT embeddings.register_model('open-8', 8, 'openai', 'http://127.0.0.1:9/v1',"
        " 'test-model', credential => '')"
    )
    for name, model in (("docs", "remote-8"), ("notes", "open-8")):
        conn.execute(f"CREATE TABLE {name} (id bigint PRIMARY KEY, body text)")
        conn.execute(f"SELECT embeddings.watch('{name}', 'body', model => '{model}')")

    def finding(model: str, **settings: Any) -> Finding:
        found = doctor.check(dsn, Settings(database_url=dsn, **settings))
        (mine,) = [f for f in found if f.check == f"model {model}"]
        assert leaks(" ".join(f"{f.detail} {f.fix}" for f in found)) == []
        return mine

    missing = finding("remote-8", api_key_dir=str(tmp_path))
    assert missing.level == "FAIL"
    assert missing.detail == (
        "remote, openai test-model at api.example.com; no API key for credential 'openai'"
        f" (looked in {tmp_path}/openai or OPENAI_API_KEY): its targets wait"
    )
    assert missing.fix == (
        f"set a file {tmp_path}/openai holding the key, or OPENAI_API_KEY in the worker's"
        " environment (docs/providers.md#api-keys)"
    )
    assert finding("remote-8").fix.startswith(
        "set EMBED_API_KEY_DIR to a directory with a file named 'openai' holding the key, or"
        " OPENAI_API_KEY"
    )
    (tmp_path / "openai").write_text(KEY)
    found = finding("remote-8", api_key_dir=str(tmp_path), openai_api_key=Secret(KEY))
    assert (found.level, found.fix) == ("ok", "")
    assert found.detail.endswith(f"the key of credential 'openai' is in file {tmp_path}/openai")
    found = finding("remote-8", openai_api_key=Secret(KEY))
    assert found.detail.endswith("is in OPENAI_API_KEY")
    (tmp_path / "openai").unlink()
    (tmp_path / "openai").symlink_to(tmp_path / "openai")
    found = finding("remote-8", api_key_dir=str(tmp_path), openai_api_key=Secret(KEY))
    assert found.level == "FAIL" and "cannot read" in found.detail and "readable" in found.fix
    assert finding("open-8").detail.endswith("no key needed (credential => '')")
