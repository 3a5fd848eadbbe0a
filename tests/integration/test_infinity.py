"""Against a real OpenAI-compatible server: infinity-emb serving all-MiniLM-L6-v2 on this
machine (tests/support/infinity.py; skipped, saying why, where it cannot be installed).

Its vectors agree with the local ONNX all-MiniLM-L6-v2's (cosine >= 0.999), through the client
alone and through the whole pipeline with a fault-injecting proxy in front of the server.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import psycopg
import pytest

from tests.integration.test_providers import drain
from tests.support import infinity
from tests.support.provider_server import ProviderServer
from worker.models.loaded import LoadedModels
from worker.models.remote import breaker as breakers
from worker.models.remote import client
from worker.models.remote.client import RemoteModel
from worker.models.remote.spec import RemoteSpec
from worker.models.remote.tokens import ExactTokens
from worker.process.runner import Worker
from worker.secret import Secret

Conn = psycopg.Connection[Any]
pytestmark = pytest.mark.slow

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Postgres stores the vectors; pgmq queues the work.",
    "ünïcödé, emoji ✓ and CJK 日本語のテキスト",
    "short",
    " ".join(
        f"word{i} of a long document that goes past the model's token limit" for i in range(80)
    ),
]


@pytest.fixture(scope="module")
def infinity_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("infinity") / "infinity.log"
    with infinity.serving(log=log) as base:
        yield base


def cosines(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> list[float]:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return [float(x) for x in (a * b).sum(axis=1)]


def spec(endpoint: str, **extra: Any) -> RemoteSpec:
    return RemoteSpec.from_row(
        {
            "name": "minilm-remote",
            "provider": "openai",
            "endpoint": endpoint,
            "remote_model": infinity.MODEL,
            "dimensions": infinity.DIMS,
            "max_tokens": 256,
            "max_inputs": 16,
            **extra,
        }
    )


def test_the_servers_vectors_agree_with_the_local_onnx_model(
    infinity_url: str, embedders: LoadedModels, minilm: str
) -> None:
    local = embedders.get(minilm)
    counter = ExactTokens(embedders.tokenizer(minilm))
    remote = RemoteModel(
        spec(infinity_url),
        api_key=lambda _: (Secret("unused"), "-"),
        counter=counter,
        breaker=breakers.Breaker("infinity"),
    )
    try:
        got = remote.embed(TEXTS)
    finally:
        remote.close()
    direct = np.array(infinity.embed(infinity_url, TEXTS))
    expected = local.embed(TEXTS)
    assert min(cosines(got, expected)) >= 0.999, cosines(got, expected)
    assert min(cosines(direct, expected)) >= 0.999  # the server itself, no worker code


def test_the_pipeline_behind_a_fault_injecting_proxy_loses_nothing(
    conn: Conn,
    run_once: Callable[..., Worker],
    infinity_url: str,
    embedders: LoadedModels,
    minilm: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client, "BACKOFF", lambda state: 0.01)
    monkeypatch.setattr(breakers, "OPEN_SECONDS", 0.2)  # an open circuit: a probe soon
    monkeypatch.setattr(breakers, "MAX_OPEN_SECONDS", 0.5)
    breakers.reset()
    faults = ["429", "500", "timeout", "reset", "truncated", "malformed", "wrong_dims"]
    # Each fault once, then at random; a timeout costs the client's whole timeout, which must
    # exceed the server's own time on a loaded 2-core machine (seconds): not among the random.
    random_faults = [f for f in faults if f != "timeout"]
    rng = random.Random(27)
    with ProviderServer(
        kind="openai", dims=infinity.DIMS, upstream=f"{infinity_url}/embeddings"
    ) as proxy:
        proxy.retry_after = 0.2
        proxy.stall_seconds = 16
        proxy.faults = [f for fault in faults for f in (fault, None)]
        proxy.fault_for = lambda inputs: rng.choice(random_faults) if rng.random() < 0.3 else None
        conn.execute(
            "SELECT embeddings.register_model('minilm-remote', 384, 'openai', %s, %s,"
            " max_tokens => 256, max_inputs => 4, timeout_seconds => 15, credential => '',"
            " tokenizer => %s)",
            (proxy.base_url, infinity.MODEL, minilm),
        )
        conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO docs VALUES (%s, %s)",
                [(i, f"{TEXTS[i % 4]} (copy {i})") for i in range(40)],
            )
        conn.execute("SELECT embeddings.watch('docs', 'body', model => 'minilm-remote')")
        drain(conn, run_once, rounds=40)
    breakers.reset()
    assert set(proxy.faults_served) == set(faults)
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)
    rows = conn.execute("SELECT body, embedding::text FROM docs ORDER BY id").fetchall()
    assert all(v is not None for _, v in rows)
    got = np.array([[float(x) for x in v.strip("[]").split(",")] for _, v in rows])
    expected = embedders.get(minilm).embed([body for body, _ in rows])
    # halfvec storage rounds to ~3 significant digits: still far above 0.999
    assert min(cosines(got, expected)) >= 0.999
