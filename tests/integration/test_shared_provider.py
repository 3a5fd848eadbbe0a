"""Several remote models behind one host (a gateway: LiteLLM, OpenRouter, a vLLM router), one of
them failing, through the whole pipeline (tests/support/provider_server.py's per-model faults).

One model answering HTML (or never answering) opened the circuit of the whole host: every other
model's table was held with that model's error ("bad answer: the answer is not JSON ...
'<html>proxy error'"), and a model's own problem (no API key for its credential) showed only
once the failing model's table was unwatched. Each table now waits for its own model's reason
alone, and the host's other models are served (worker/models/remote/breaker.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from tests.support.jobs import expire_leases
from tests.support.provider_server import ProviderServer
from worker import db, exits
from worker.models.loaded import LoadedModels
from worker.models.remote import breaker as breakers
from worker.models.remote import client
from worker.pipeline.lanes import Lanes
from worker.pipeline.targets import TargetRegistry
from worker.process.held import HeldJobs
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]
ROWS = 10


@pytest.fixture(autouse=True)
def fresh_breakers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Breakers are per process: each test starts with closed ones."""
    monkeypatch.setattr(client, "BACKOFF", lambda state: 0.01)
    breakers.reset()
    yield
    breakers.reset()


@pytest.fixture
def provider() -> Iterator[ProviderServer]:
    with ProviderServer(kind="openai", dims=8) as server:
        server.stall_seconds = 1.5
        yield server


def watched(conn: Conn, server: ProviderServer, table: str, credential: str = "") -> None:
    """`table` with ROWS rows, watched with a model of its own on `server` (the model's name is
    the table's, its remote model `<table>-upstream`): a request per 2 rows, several of them."""
    conn.execute(
        "SELECT embeddings.register_model(%s, 8, 'openai', %s, %s, credential => %s,"
        " max_inputs => 2, timeout_seconds => 0.5)",
        (table, server.base_url, f"{table}-upstream", credential),
    )
    conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, body text)")
    conn.execute(f"INSERT INTO {table} SELECT g, 'text ' || g FROM generate_series(1, {ROWS}) g")
    conn.execute(f"SELECT embeddings.watch('{table}', 'body', model => '{table}')")


def reasons(conn: Conn) -> dict[str, tuple[int, str | None]]:
    rows = conn.execute(
        "SELECT target, embedded_rows, deferred_reason FROM embeddings_internal.target_status(true)"
    )
    return {str(t): (int(n), why) for t, n, why in rows}


def held_fixes(conn: Conn) -> dict[str, str]:
    """The fix of each held target, as `status`, `doctor` and /readyz show it."""
    rows = conn.execute(
        "SELECT target, fix FROM embeddings_internal.stopped_targets() WHERE state = 'held'"
    )
    return {str(t): str(fix) for t, fix in rows}


@pytest.mark.parametrize(("fault", "said"), [("malformed", "bad answer"), ("timeout", "timeout")])
def test_one_failing_model_holds_back_only_its_own_table_each_with_its_reason(
    conn: Conn,
    run_once: Callable[..., Worker],
    provider: ProviderServer,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
    said: str,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    provider.model_faults["failing-upstream"] = fault
    watched(conn, provider, "failing")  # (its jobs first in every batch)
    watched(conn, provider, "keyless", credential="openai")
    watched(conn, provider, "healthy")
    for _ in range(3):
        run_once(max_attempts=1, expect=exits.UNSERVED)
        expire_leases(conn)

    found = reasons(conn)
    host = f"127.0.0.1:{provider.port}"
    assert found["public.healthy.embedding"] == (ROWS, None), found
    embedded, why = found["public.failing.embedding"]
    assert embedded == 0 and why is not None and said in why, found
    assert f"the provider at {host}" not in why, why
    embedded, why = found["public.keyless.embedding"]
    assert embedded == 0 and why is not None, found
    assert "no API key for credential 'openai'" in why and said not in why, why
    assert not breakers.for_provider(host).is_open
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)
    # The fix of a model's own circuit is that model's, not its host's (the host answers).
    fix = held_fixes(conn)["public.failing.embedding"]
    assert "make model failing's requests succeed" in fix, fix
    assert "remote model 'failing-upstream'" in fix and "timeout_seconds (0.5)" in fix, fix
    assert "the network open" not in fix, fix


def test_a_host_that_fails_holds_back_its_models_naming_the_failure_and_the_model(
    conn: Conn, run_once: Callable[..., Worker], provider: ProviderServer
) -> None:
    watched(conn, provider, "first")
    watched(conn, provider, "second")
    provider.down = True
    for _ in range(2):
        run_once(max_attempts=1, expect=exits.UNSERVED)
        expire_leases(conn)
    host = f"127.0.0.1:{provider.port}"
    found = reasons(conn)
    _, why = found["public.second.embedding"]
    assert why is not None and f"the provider at {host} is failing (HTTP 500: " in why, found
    assert ", from model first)" in why or ", from model second)" in why, why
    assert "circuit open" in why
    fix = held_fixes(conn)["public.second.embedding"]
    assert f"its provider reachable from the worker (model second at http://{host}" in fix, fix
    assert "the network open" in fix, fix


def test_a_model_s_open_circuit_held_by_a_batch_then_the_keeper_keeps_its_since(
    conn: Conn,
    dsn: str,
    run_once: Callable[..., Worker],
    provider: ProviderServer,
    embedders: LoadedModels,
) -> None:
    """A batch that meets a model's open circuit records the circuit's reason for the held
    jobs, and so does the keeper's round (HeldJobs) for the same circuit: one text, so the
    deferral's `since` says since when the jobs wait. Before, the batch put the table's name
    first and the keeper did not, and `since` started again with each of them."""
    provider.model_faults["failing-upstream"] = "malformed"
    watched(conn, provider, "failing")
    host = f"127.0.0.1:{provider.port}"
    for _ in range(3):  # (the circuit opens, then batches meet it open)
        run_once(max_attempts=1, expect=exits.UNSERVED)
        expire_leases(conn)
    assert breakers.problem_of(host, "failing") is not None
    run_once(max_attempts=1, expect=exits.UNSERVED)  # (its jobs held: they wait out the circuit)
    deferral = "SELECT reason, since FROM embeddings.deferrals"
    by_batch = conn.execute(deferral).fetchone()
    assert by_batch is not None and "model failing at" in by_batch[0], by_batch

    registry = TargetRegistry()
    with db.connect(dsn) as worker_conn:
        registry.refresh(worker_conn)
        HeldJobs("embedding_jobs", Lanes("embedding_jobs", 64), registry, embedders).release(
            worker_conn
        )
    assert conn.execute(deferral).fetchone() == by_batch
