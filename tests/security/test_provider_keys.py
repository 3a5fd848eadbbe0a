"""A remote provider's key and endpoint as an attacker (or a slip of the operator) shapes them
(issue 36): a malformed key defers only its provider's targets and is printed nowhere; a key
goes over plain http only to a literal loopback address.

The worker runs in-process (the integration tier's run_once) against a stand-in provider
(tests/support/provider_server.py); the unit side is tests/unit/test_provider_keys.py."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.test_provider_secrets import everything_in_the_database
from tests.support.jobs import expire_leases, messages
from tests.support.provider_server import ProviderServer
from worker import exits
from worker.cli import doctor
from worker.config import Settings
from worker.models.remote import breaker as breakers
from worker.models.remote import client
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]
KEY = "sk-proj-TRUSTkeys0123456789abcdefghij"
SECOND = "sk-proj-SECONDlineOFtheFILE987654"
PARTS = (KEY, KEY[:12], KEY[-12:], "TRUSTkeys0123", SECOND)


def leaks(text: str) -> list[str]:
    return [part for part in PARTS if part in text]


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[ProviderServer]:
    monkeypatch.setattr(client, "BACKOFF", lambda state: 0.01)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("EMBED_API_KEY_DIR", raising=False)
    breakers.reset()
    with ProviderServer(kind="openai", dims=8, api_key=KEY) as server:
        yield server
    breakers.reset()


def deferred(conn: Conn) -> dict[str, str | None]:
    rows = conn.execute(
        "SELECT target, deferred_reason FROM embeddings_internal.target_status(true)"
    )
    return {str(target): reason for target, reason in rows}


def unembedded(conn: Conn, table: str) -> int:
    (n,) = conn.execute(f"SELECT count(*) FROM {table} WHERE embedding IS NULL").fetchone() or (0,)
    return int(n)


@pytest.mark.parametrize("bad", ["a key file of two lines", "a typographic quote in the variable"])
def test_a_malformed_key_defers_its_provider_only_and_is_printed_nowhere(
    conn: Conn,
    dsn: str,
    minilm: str,
    run_once: Callable[..., Worker],
    provider: ProviderServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    bad: str,
) -> None:
    """A local-model table is served; the remote model's tables (one of them chunked) wait, no
    attempt spent, nothing dead-lettered, with an error naming the file or the variable in
    `status` and `doctor`; the key is in no log line, no failure, no reason. Fixed, it is sent."""
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "openai"
    if bad == "a key file of two lines":
        monkeypatch.setenv("EMBED_API_KEY_DIR", str(tmp_path))
        path.write_text(f"{KEY}\n{SECOND}\n")
        where = f"EMBED_API_KEY_DIR: {path}"
    else:
        monkeypatch.setenv("OPENAI_API_KEY", f"{KEY}\u201d")
        where = "OPENAI_API_KEY"
    conn.execute(
        "SELECT embeddings.register_model('remote-8', 8, 'openai', %s, 'test-model',"
        " max_tokens => 40, tokenizer => %s)",
        (provider.base_url, minilm),
    )
    for table, options in (
        ("local_docs", f"model => '{minilm}'"),
        ("docs", "model => 'remote-8'"),
        ("notes", "model => 'remote-8', chunk_tokens => 32"),
    ):
        conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, body text)")
        conn.execute(f"INSERT INTO {table} VALUES (1, 'one'), (2, 'two')")
        conn.execute(f"SELECT embeddings.watch('{table}', 'body', {options})")

    # exit 3, not a crash: the worker never stops over one provider; it says what it left
    run_once(max_attempts=1, expect=exits.UNSERVED)

    assert unembedded(conn, "local_docs") == 0
    assert unembedded(conn, "docs") == 2
    assert conn.execute("SELECT count(*) FROM notes_chunks").fetchone() == (0,)
    reasons = deferred(conn)
    for table in ("docs", "notes"):
        reason = reasons[f"public.{table}.embedding"]
        assert reason is not None and where in reason and "openai_api_key" not in reason, reason
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)
    assert sum(len(m["keys"]) for m in messages(conn)) == 4  # both remote tables' rows wait
    assert provider.requests == []
    settings = Settings.from_env(database_url=dsn, model=minilm)
    (finding,) = [f for f in doctor.check(dsn, settings) if f.check == "model remote-8"]
    assert finding.level == "FAIL" and where in finding.detail, finding
    seen = " ".join(
        [caplog.text, everything_in_the_database(conn), str(reasons), finding.detail, finding.fix]
    )
    assert leaks(seen) == []

    # Fixed: the next run sends it, and both tables catch up.
    path.write_text(KEY + "\n")
    monkeypatch.setenv("EMBED_API_KEY_DIR", str(tmp_path))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    expire_leases(conn)
    run_once(max_attempts=1)
    assert unembedded(conn, "docs") == 0
    assert conn.execute("SELECT count(*) FROM notes_chunks").fetchone() != (0,)


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1.nip.io:{port}/v1",  # a name that resolves wherever its owner says
        "http://127.1:{port}/v1",
        "http://[::ffff:127.0.0.1]:{port}/v1",
        "http://tei.internal:{port}/v1",
    ],
)
def test_a_key_goes_over_plain_http_only_to_a_literal_loopback_address(
    conn: Conn,
    run_once: Callable[..., Worker],
    provider: ProviderServer,
    monkeypatch: pytest.MonkeyPatch,
    endpoint: str,
) -> None:
    """register_model() refuses such an endpoint for a model with a key (any endpoint is fine
    without one); a registration that has one anyway (made before this check, or by hand)
    defers its targets when the worker loads the model, naming the endpoint, and no request
    leaves."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    endpoint = endpoint.format(port=provider.port)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="plain http") as raised:
        conn.execute(
            "SELECT embeddings.register_model('far', 8, 'openai', %s, 'test-model')", (endpoint,)
        )
    assert endpoint in str(raised.value)
    conn.execute(
        "SELECT embeddings.register_model('far', 8, 'openai', %s, 'test-model', credential => '')",
        (endpoint,),
    )
    for allowed in ("127.0.0.1", "127.9.9.9", "[::1]", "localhost"):
        conn.execute(
            "SELECT embeddings.register_model('near', 8, 'openai', %s, 'test-model')",
            (f"http://{allowed}:{provider.port}/v1",),
        )
    conn.execute("UPDATE embeddings.models SET credential = 'openai' WHERE name = 'far'")
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs VALUES (1, 'one')")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'far')")
    run_once(max_attempts=1, expect=exits.UNSERVED)
    reason = deferred(conn)["public.docs.embedding"]
    assert reason is not None and "plain http" in reason and endpoint in reason, reason
    assert provider.requests == []
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)
    assert len(messages(conn)) == 1
