"""Remote models through the whole pipeline, against a stand-in provider that injects faults
(tests/support/provider_server.py): every row ends embedded or, when the input itself is at
fault, dead-lettered with a clear error; nothing is lost, and a rate limit, a provider that is
down or answers garbage never spends a row's attempt (max_attempts=1 here: one spent attempt
would dead-letter the row).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import psycopg
import pytest

from tests.support.jobs import deferred_reason, expire_leases, lanes, messages
from tests.support.models import shared_models_dir
from tests.support.provider_server import ProviderServer, fake_vector
from worker import db, exits, metrics
from worker.config import Settings
from worker.http.readiness import ReadinessProbe
from worker.models import onnx
from worker.models.remote import breaker as breakers
from worker.models.remote import client, spec
from worker.models.remote.tokens import EstimatedTokens
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]
DIMS = 8
ROWS = 40


@pytest.fixture(autouse=True)
def fresh_breakers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Breakers are per process: each test starts with closed ones, quick to reopen."""
    monkeypatch.setattr(breakers, "OPEN_SECONDS", 0.2)
    monkeypatch.setattr(client, "BACKOFF", lambda state: 0.01)
    breakers.reset()
    yield
    breakers.reset()


@pytest.fixture
def provider() -> Iterator[ProviderServer]:
    with ProviderServer(kind="openai", dims=DIMS) as server:
        server.retry_after = 0.2
        server.stall_seconds = 1.5
        yield server


def register(conn: Conn, server: ProviderServer, name: str = "remote-8", **extra: Any) -> str:
    options = {"credential": "", "max_inputs": 8, "timeout_seconds": 0.5, **extra}
    named = ", ".join(f"{k} => %({k})s" for k in options)
    conn.execute(
        "SELECT embeddings.register_model(%(name)s, %(dims)s, %(kind)s, %(endpoint)s,"
        f" 'test-model', {named})",
        {
            "name": name,
            "dims": server.dims,
            "kind": server.kind,
            "endpoint": server.base_url,
            **options,
        },
    )
    return name


def watched_docs(conn: Conn, model: str, rows: int = ROWS, tail: str = "", **options: Any) -> None:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute(
        "INSERT INTO docs SELECT g, 'document number ' || g || %s FROM generate_series(1, %s) g",
        (tail, rows),
    )
    named = "".join(f", {k} => %({k})s" for k in options)
    conn.execute(
        f"SELECT embeddings.watch('docs', 'body', model => %(model)s{named})",
        {"model": model, **options},
    )


def drain(conn: Conn, run_once: Callable[..., Worker], rounds: int = 30, **overrides: Any) -> int:
    """Runs the worker until the queue is empty, making waiting jobs visible between runs (what
    waiting out their delay does); returns the rounds it took."""
    for n in range(1, rounds + 1):  # (a run that leaves jobs held exits 3)
        run_once(**{"max_attempts": 1, "expect": (exits.OK, exits.UNSERVED), **overrides})
        if not messages(conn):
            return n
        expire_leases(conn)
    raise AssertionError(f"jobs left after {rounds} runs: {messages(conn)}")


def vectors(conn: Conn) -> dict[int, np.ndarray[Any, Any]]:
    rows = conn.execute("SELECT id, embedding::text FROM docs WHERE embedding IS NOT NULL")
    return {i: np.array([float(x) for x in v.strip("[]").split(",")]) for i, v in rows}


@pytest.mark.parametrize("kind", ["openai", "huggingface"])
def test_a_remote_model_embeds_like_a_local_one(
    conn: Conn, run_once: Callable[..., Worker], kind: str
) -> None:
    with ProviderServer(kind=kind, dims=DIMS) as provider:
        watched_docs(conn, register(conn, provider))
        drain(conn, run_once)
    got = vectors(conn)
    assert len(got) == ROWS
    for i, v in got.items():
        assert np.allclose(v, fake_vector(f"document number {i}", DIMS), atol=2e-3)
    assert conn.execute(
        "SELECT model, revision, variant FROM embeddings.provenance WHERE NOT shadow"
    ).fetchall() == [("remote-8", "test-model@8", "remote")]
    assert max(len(r["inputs"]) for r in provider.requests) <= 8  # the registered max_inputs
    assert provider.violations == []
    if kind == "huggingface":  # the feature-extraction task's request, pooled vectors back
        assert all(r["body"]["truncate"] is True for r in provider.requests)
    # Cost: tokens as the provider counted them (OpenAI's usage.total_tokens; Hugging Face
    # answers no count: the client's estimate), and requests, per model.
    labels = {"provider": f"127.0.0.1:{provider.port}", "model": "remote-8"}
    sent = [t for r in provider.requests for t in r["inputs"]]
    if kind == "openai":
        billed = sum(len(t) // 4 for t in sent)
    else:
        billed = sum(EstimatedTokens().fit(t, 512)[1] for t in sent)
    assert metrics.REGISTRY.get_sample_value("embed_worker_provider_tokens_total", labels) == billed
    assert metrics.REGISTRY.get_sample_value(
        "embed_worker_provider_requests_total", {**labels, "outcome": "ok"}
    ) == len(provider.requests)


def test_a_batch_keeps_several_requests_in_flight_with_default_settings(
    conn: Conn, run_once: Callable[..., Worker], provider: ProviderServer
) -> None:
    """EMBED_BATCH_SIZE 128 fits in one request of OpenAI's 2048 inputs: it is spread over the
    model's max_in_flight (4 by default) requests of balanced sizes all the same, which the
    server sees in flight together."""
    provider.gather = spec.DEFAULT_IN_FLIGHT  # held until that many arrive (or 3 s)
    conn.execute(
        "SELECT embeddings.register_model('remote-8', 8, 'openai', %s, 'test-model',"
        " credential => '')",
        (provider.base_url,),
    )
    watched_docs(conn, "remote-8", rows=Settings().batch_size)
    drain(conn, run_once, batch_size=Settings().batch_size)
    assert conn.execute("SELECT count(*) FROM docs WHERE embedding IS NULL").fetchone() == (0,)
    assert provider.max_concurrent == spec.DEFAULT_IN_FLIGHT
    sizes = sorted(len(r["inputs"]) for r in provider.requests)
    assert sizes == [32, 32, 32, 32], sizes


LONG = " and".join(f" the {i}th paragraph says something about vectors" for i in range(60))


def counted_like(minilm: str) -> Callable[[str], int]:
    """The provider's count: a real tokenizer's (MiniLM's WordPiece, special tokens included)."""
    tokenizer = onnx.load_tokenizer(
        shared_models_dir() / minilm / "tokenizer.json", max_tokens=None
    )
    return lambda text: len(tokenizer.encode(text).ids)


@pytest.mark.parametrize("counting", ["estimated", "exact"])
def test_long_texts_are_cut_to_the_providers_token_limits_and_embedded(
    conn: Conn,
    run_once: Callable[..., Worker],
    provider: ProviderServer,
    minilm: str,
    counting: str,
) -> None:
    """The provider refuses an input over 64 tokens and a request over 200 (as OpenAI's
    8192 and 300,000): the client cuts each text to max_tokens (tokens.fit, estimated from the
    bytes or counted by the registered tokenizer) and groups the requests within the budget, so
    every row is embedded (from its cut text) and none refused."""
    provider.count_tokens = counted_like(minilm)
    provider.max_input_tokens, provider.max_request_tokens = 64, 200
    tokenizer = {"tokenizer": minilm} if counting == "exact" else {}
    model = register(conn, provider, max_tokens=64, max_request_tokens=200, **tokenizer)
    watched_docs(conn, model, rows=12, tail=LONG)
    drain(conn, run_once)
    assert provider.token_refusals == []
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)
    bodies = dict(conn.execute("SELECT id, body FROM docs").fetchall())
    sent = {
        r["inputs"][i]: r["tokens"][i] for r in provider.requests for i in range(len(r["inputs"]))
    }
    assert all(sum(r["tokens"]) <= 200 for r in provider.requests)
    got = vectors(conn)
    assert len(got) == 12
    for key, body in bodies.items():
        (cut,) = [text for text in sent if body.startswith(text)]
        assert len(cut) < len(body) and sent[cut] <= 64
        assert np.allclose(got[key], fake_vector(cut, DIMS), atol=2e-3)
    if counting == "exact":  # cut at the limit, not short of it
        assert max(sent.values()) == 64


def test_a_chunked_target_with_a_remote_model(
    conn: Conn, run_once: Callable[..., Worker], provider: ProviderServer, minilm: str
) -> None:
    """watch(..., chunk_tokens => 32) with a remote model: documents are split by the model's
    registered tokenizer, each chunk embedded by the provider within its token limit."""
    provider.count_tokens = counted_like(minilm)
    provider.max_input_tokens = 40
    model = register(conn, provider, max_tokens=40, tokenizer=minilm)
    watched_docs(conn, model, rows=3, tail=LONG, chunk_tokens=32)
    drain(conn, run_once)
    assert provider.token_refusals == []
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)
    chunks = conn.execute(
        "SELECT id, chunk, embedding::real[] FROM docs_chunks ORDER BY id, seq"
    ).fetchall()
    assert {key for key, _, _ in chunks} == {1, 2, 3} and len(chunks) > 3 * 10
    for _, text, vector in chunks:
        assert np.allclose(vector, fake_vector(text, DIMS), atol=2e-3)
    assert max(n for r in provider.requests for n in r["tokens"]) <= 32 + 2  # [CLS], [SEP]


FAULTS = ["429", "500", "timeout", "reset", "truncated", "malformed", "wrong_count", "dup_index"]


def test_faults_lose_no_row_and_spend_no_attempt(
    conn: Conn, run_once: Callable[..., Worker], provider: ProviderServer
) -> None:
    rng = random.Random(27)
    provider.faults = [f for fault in FAULTS for f in (fault, None)]  # each once, then random
    provider.fault_for = lambda inputs: rng.choice(FAULTS) if rng.random() < 0.3 else None
    watched_docs(conn, register(conn, provider, max_inputs=4))
    drain(conn, run_once)
    assert conn.execute("SELECT count(*) FROM docs WHERE embedding IS NULL").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)
    for i, v in vectors(conn).items():
        assert np.allclose(v, fake_vector(f"document number {i}", DIMS), atol=2e-3)
    assert set(provider.faults_served) == set(FAULTS)


def test_rate_limits_past_the_inline_wait_defer_without_spending_attempts(
    conn: Conn,
    run_once: Callable[..., Worker],
    provider: ProviderServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Retry-After too long to wait for inline hands the rows back with that delay."""
    monkeypatch.setattr(client, "MAX_INLINE_WAIT_SECONDS", 0.05)
    provider.faults = ["429"] * 6
    watched_docs(conn, register(conn, provider))
    rounds = drain(conn, run_once)
    assert rounds > 1  # the first run was refused, and its rows came back
    assert conn.execute("SELECT count(*) FROM docs WHERE embedding IS NULL").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)
    assert provider.faults_served["429"] == 6


def queued(conn: Conn) -> list[tuple[float, int, int]]:
    """Each queued job's seconds until visible, read count and prior attempts, both lanes."""
    found = []
    for lane in lanes(conn, "embedding_jobs"):
        found += conn.execute(
            psycopg.sql.SQL(
                "SELECT extract(epoch FROM vt - clock_timestamp())::float8, read_ct,"
                " coalesce((message ->> 'attempts')::int, 0) FROM pgmq.{}"
            ).format(psycopg.sql.Identifier(f"q_{lane}"))
        ).fetchall()
    return found


@pytest.mark.parametrize("refused", ["every request", "one request"])
def test_a_retry_after_past_the_inline_wait_makes_the_jobs_visible_that_much_later(
    conn: Conn, run_once: Callable[..., Worker], provider: ProviderServer, refused: str
) -> None:
    """A 429 with Retry-After 120 (past the 10 s waited inline): the rows' jobs go back to the
    queue visible about 120 s later (read from the queue, not waited for), and no attempt is
    spent: with max_attempts=1 one spent attempt would have dead-lettered them. Whether the
    provider refused every request (the target deferred for that long) or one request of the
    batch while the others were answered (its rows re-queued in a message of their own, with
    that delay; were it visible at once, `run --once` would read it again and, with the
    provider still throttled, defer it then: the final state is what a user sees)."""
    provider.retry_after = 120
    if refused == "every request":
        provider.fault_for = lambda inputs: "429"
    else:
        provider.faults = [None, "429"]
    watched_docs(conn, register(conn, provider))
    run_once(max_attempts=1, expect=(exits.OK, exits.UNSERVED))
    assert provider.faults_served["429"] >= 1
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)
    jobs = queued(conn)
    assert jobs, "the rows' jobs are back in the queue"
    for seconds, read_ct, attempts in jobs:
        # The worker's run and this query took a few seconds of the 120 at most.
        assert 120 - 30 < seconds <= 121, jobs
        assert read_ct == 0 and attempts == 0, jobs
    embedded = len(vectors(conn))
    if refused == "every request":
        assert embedded == 0
    else:
        assert 0 < embedded < ROWS


def test_a_provider_that_is_down_opens_its_circuit_and_defers_its_target(
    conn: Conn, run_once: Callable[..., Worker], provider: ProviderServer
) -> None:
    watched_docs(conn, register(conn, provider))
    provider.down = True
    worker = run_once(max_attempts=1, expect=exits.UNSERVED)
    row = conn.execute(
        "SELECT deferred_reason FROM embeddings_internal.target_status(true)"
    ).fetchone()
    assert row is not None and "circuit open" in row[0] and "HTTP 500" in row[0]
    host = f"127.0.0.1:{provider.port}"
    probe = readiness(worker)
    (deferred,) = probe.unservable_targets().items()
    assert deferred[0] == "public.docs.embedding" and "circuit open" in deferred[1]
    # The fix is the provider's, not a local model's (issue 37): the endpoint named, no key.
    held = conn.execute(
        "SELECT fix FROM embeddings_internal.stopped_targets() WHERE state = 'held'"
    )
    (fix,) = held.fetchone() or ("",)
    assert f"its provider reachable from the worker (model remote-8 at http://{host}" in fix
    assert "model download" not in fix and "EMBED_MODEL_PATH" not in fix
    assert (
        metrics.REGISTRY.get_sample_value("embed_worker_provider_circuit_open", {"provider": host})
        == 1
    )
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)
    assert len(messages(conn)) > 0
    provider.down = False
    drain(conn, run_once)  # the probe goes through once the open time is over
    assert conn.execute("SELECT count(*) FROM docs WHERE embedding IS NULL").fetchone() == (0,)
    assert not breakers.open_providers()
    assert (
        metrics.REGISTRY.get_sample_value("embed_worker_provider_circuit_open", {"provider": host})
        == 0
    )


def test_a_change_off_a_remote_model_whose_provider_is_down_holds_the_target(
    conn: Conn,
    run_once: Callable[..., Worker],
    provider: ProviderServer,
    tiny_models: tuple[str, str],
) -> None:
    """Its new model loaded, a change is served by the new model alone only when the old one
    cannot load (pipeline/shadow.py); an old model whose provider's circuit is open still
    defers the application's rows: /readyz names the target, with that reason."""
    watched_docs(conn, register(conn, provider))
    provider.down = True
    worker = run_once(max_attempts=1, expect=exits.UNSERVED)  # (the circuit opens)
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (tiny_models[0],))
    worker.embedders.get(tiny_models[0])
    with db.connect(worker.dsn) as reading:
        worker.registry.refresh(reading)  # (the change, as the next batch reads it)
    (reason,) = readiness(worker).unservable_targets().values()
    assert "circuit open" in reason, reason


def test_a_probe_that_meets_a_429_is_the_reason_given_until_the_circuit_closes(
    conn: Conn,
    run_once: Callable[..., Worker],
    provider: ProviderServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The provider fails (the circuit opens), then answers the probe with a 429 past the
    inline wait: /readyz names the 429, not the HTTP 500 the provider no longer answers; once a
    probe is answered, neither /readyz nor status gives any reason."""
    monkeypatch.setattr(client, "MAX_INLINE_WAIT_SECONDS", 0.05)
    watched_docs(conn, register(conn, provider, max_inputs=64))
    provider.down = True
    worker = run_once(max_attempts=1, expect=exits.UNSERVED)
    assert "HTTP 500" in deferred_reason(conn)
    provider.down, provider.faults, provider.retry_after = False, ["429"], 1.0
    for _ in range(30):  # (each run after the open time sends the probe)
        expire_leases(conn)
        worker = run_once(max_attempts=1, expect=(exits.OK, exits.UNSERVED))
        if provider.faults_served.get("429"):
            break
    probe = readiness(worker)
    (reason,) = probe.unservable_targets().values()
    assert "rate limited (429)" in reason and "HTTP 500" not in reason, reason
    drain(conn, run_once)
    assert probe.unservable_targets() == {}
    conn.execute(
        "INSERT INTO docs VALUES (1000, 'a row after')"
    )  # (a reason shows while jobs wait)
    row = conn.execute(
        "SELECT pending_jobs, deferred_reason FROM embeddings_internal.target_status(true)"
    ).fetchone()
    assert row == (1, None)


def test_the_inputs_own_faults_fail_only_those_rows(
    conn: Conn, run_once: Callable[..., Worker], provider: ProviderServer
) -> None:
    """A refused input (400) and a NaN vector fail their own row, with a clear error; the rest
    of the request's rows are written."""
    watched_docs(conn, register(conn, provider), rows=10)
    conn.execute("UPDATE docs SET body = 'POISON here' WHERE id = 3")
    conn.execute("UPDATE docs SET body = 'a NANVEC text' WHERE id = 7")
    drain(conn, run_once)
    failures = dict(
        conn.execute("SELECT row_key::text, last_error FROM embeddings.failures").fetchall()
    )
    assert set(failures) == {"3", "7"}, failures
    assert "POISON is not allowed" in failures["3"]
    assert "NaN" in failures["7"]
    assert conn.execute("SELECT count(*) FROM docs WHERE embedding IS NULL").fetchone() == (2,)


def test_vectors_of_the_wrong_dimension_defer_the_target_with_a_clear_error(
    conn: Conn, run_once: Callable[..., Worker], provider: ProviderServer
) -> None:
    provider.fault_for = lambda inputs: "wrong_dims"
    watched_docs(conn, register(conn, provider), rows=5)
    run_once(max_attempts=1, expect=exits.UNSERVED)
    (reason,) = conn.execute(
        "SELECT deferred_reason FROM embeddings_internal.target_status(true)"
    ).fetchone() or (None,)
    assert reason is not None and "7-dimensional" in reason and "8 dimensions" in reason
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)
    assert len(messages(conn)) > 0


@pytest.mark.parametrize("column", ["halfvec", "vector"])
def test_adopted_vectors_are_kept_and_new_rows_written_beside_them(
    conn: Conn, run_once: Callable[..., Worker], provider: ProviderServer, column: str
) -> None:
    """A guide user's table already holds the provider model's vectors (halfvec(1536), or
    vector(1536) as older copies of the guide made it): adopt_vectors() records them as that
    model's, nothing is re-embedded, and new rows get vectors as usual, in the column's type."""
    model = register(conn, provider)
    conn.execute(
        f"CREATE TABLE docs (id bigint PRIMARY KEY, body text, embedding {column}({DIMS}))"
    )
    conn.execute(
        f"INSERT INTO docs SELECT g, 'old ' || g, array_fill(0.5, ARRAY[%s])::{column}"
        " FROM generate_series(1, 5) g",
        (DIMS,),
    )
    conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s, backfill => false)", (model,)
    )
    assert conn.execute("SELECT embeddings.adopt_vectors('docs')").fetchone() == (
        "remote-8 test-model@8 remote",
    )
    conn.execute("INSERT INTO docs (id, body) VALUES (6, 'new row')")
    drain(conn, run_once)
    assert [len(r["inputs"]) for r in provider.requests] == [1]  # only the new row
    got = vectors(conn)
    assert np.allclose(got[6], fake_vector("new row", DIMS), atol=2e-3)
    assert np.allclose(got[1], np.full(DIMS, 0.5), atol=1e-3)  # kept as they were
    assert conn.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = 'docs'::regclass AND attname = 'embedding'"
    ).fetchone() == (f"{column}({DIMS})",)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="name the revision"):
        conn.execute("SELECT embeddings.register_model('local-x', 8, 'local')")
        conn.execute("UPDATE embeddings.targets SET model = 'local-x'")
        conn.execute("SELECT embeddings.adopt_vectors('docs')")


def test_blue_green_changes_between_a_local_and_a_remote_model_both_ways(
    conn: Conn, run_once: Callable[..., Worker], minilm: str
) -> None:
    with ProviderServer(kind="openai", dims=384) as server:
        remote = register(conn, server, name="remote-384")
        watched_docs(conn, minilm, rows=12)
        drain(conn, run_once)
        local = vectors(conn)
        conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (remote,))
        drain(conn, run_once)
        assert conn.execute("SELECT model FROM embeddings.targets").fetchone() == (remote,)
        for i, v in vectors(conn).items():
            assert np.allclose(v, fake_vector(f"document number {i}", 384), atol=2e-3)
        conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (minilm,))
        drain(conn, run_once)
    assert conn.execute("SELECT model FROM embeddings.targets").fetchone() == (minilm,)
    back = vectors(conn)
    assert all(np.allclose(back[i], local[i], atol=2e-3) for i in local)
    producers = conn.execute("SELECT model FROM embeddings.provenance WHERE NOT shadow").fetchall()
    assert producers == [(minilm,)]


def readiness(worker: Worker) -> ReadinessProbe:
    """/readyz's probe of a finished worker, as serve() makes it (worker/http/server.py)."""
    return ReadinessProbe(
        worker.dsn,
        worker.settings.queue,
        registry=worker.registry,
        embedders=worker.embedders,
        default_model=worker.default_model,
        stopped=lambda: True,
        waiting=worker.waiting,
    )
