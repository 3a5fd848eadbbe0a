"""The remote rerank kinds' request and answer shapes (worker/models/remote/rerank_providers.py),
and RemoteReranker's guarantees, against a stand-in that enforces each documented contract
(tests/support/rerank_server.py; none of the services is reachable from here). What was checked:

- Cohere, "Rerank V2" (API reference, POST /v2/rerank): `model`, `query`, `documents` (strings),
  `top_n`, `max_tokens_per_doc` (4,096 by default); answer {"id", "results": [{"index",
  "relevance_score"}], "meta"}, sorted by relevance; errors {"message"}.
- Jina, "Reranker API" (POST https://api.jina.ai/v1/rerank): `model`, `query`, `documents`,
  `top_n`, `return_documents`; answer {"model", "results": [{"index", "relevance_score"}],
  "usage": {"total_tokens"}}; errors {"detail"}.
- Voyage, "Rerankers" (POST https://api.voyageai.com/v1/rerank): `query`, `documents` (at most
  1,000), `model`, `top_k`, `return_documents`, `truncation`; answer {"object": "list", "data":
  [{"index", "relevance_score"}], "model", "usage": {"total_tokens"}}; errors {"detail"}.
- Hugging Face text-embeddings-inference, POST /rerank (its OpenAPI document): `query`, `texts`,
  `truncate`, `raw_scores`, `return_text`, `truncation_direction`; at most
  --max-client-batch-size texts (32 by default); answer [{"index", "score"}]; errors
  {"error", "error_type"}; Authorization "Bearer <--api-key>" where the server has one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tests.support.remote_clients import api_key, closed_after_test
from tests.support.rerank_server import KINDS, RerankServer, overlap
from worker import exceptions
from worker.models.remote import breaker as breakers
from worker.models.remote import keys, rerank_providers
from worker.models.remote import reranker as remote_reranker
from worker.models.remote.providers import BadResponse
from worker.models.remote.rerank_spec import RerankerSpec
from worker.models.remote.reranker import RemoteReranker
from worker.secret import Secret

KEY = "jina_RERANKCONTRACT0123456789"
QUESTION = "how long does a refund take"
PASSAGES = [
    "Shipping is free above 50 euros.",
    "A refund takes 14 days.",
    "How long does shipping take?",
    "Refunds: how long they take, and what they cost.",
    "Prices include VAT.",
]


def spec_for(server: RerankServer, **overrides: Any) -> RerankerSpec:
    kind = rerank_providers.of(server.kind)
    row: dict[str, Any] = {
        "name": f"test-{server.kind}",
        "provider": server.kind,
        "endpoint": server.base_url,
        "remote_model": "test-reranker" if kind.sends_model else None,
        "credential": "test",
    }
    row.update(overrides)
    return RerankerSpec.from_row(row)


def reranker_for(
    spec: RerankerSpec, key: str | None = KEY, sleeps: list[float] | None = None
) -> RemoteReranker:
    made = RemoteReranker(
        spec,
        api_key=api_key(key),
        breaker=breakers.Breaker(spec.host),
        sleep=(sleeps.append if sleeps is not None else lambda _: None),
    )
    return closed_after_test(made)


@pytest.fixture(params=KINDS)
def server(request: pytest.FixtureRequest) -> Iterator[RerankServer]:
    with RerankServer(kind=request.param, api_key=KEY) as found:
        yield found


def expected(passages: list[str]) -> list[float]:
    return [overlap(QUESTION, p) for p in passages]


def test_each_kind_sends_its_documented_request(server: RerankServer) -> None:
    scores = reranker_for(spec_for(server)).score(QUESTION, PASSAGES)

    assert server.violations == []
    (request,) = server.requests
    assert request["authorization"] == f"Bearer {KEY}"
    documents = {"tei": "texts"}.get(server.kind, "documents")
    wanted: dict[str, Any] = {"query": QUESTION, documents: PASSAGES}
    by_kind: dict[str, dict[str, Any]] = {
        "cohere": {"model": "test-reranker", "top_n": 5},
        "jina": {"model": "test-reranker", "top_n": 5, "return_documents": False},
        "voyage": {
            "model": "test-reranker",
            "top_k": 5,
            "return_documents": False,
            "truncation": True,
        },
        "tei": {"truncate": True, "raw_scores": False, "return_text": False},
    }
    wanted |= by_kind[server.kind]
    assert request["body"] == wanted
    # Answered best first: put back in the passages' order.
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores, expected(PASSAGES), rtol=1e-6)
    assert list(np.argsort(-scores, kind="stable")) != list(range(len(PASSAGES)))


@pytest.mark.parametrize("kind", KINDS)
def test_answers_in_score_order_are_put_back_in_the_documents_order(kind: str) -> None:
    provider = rerank_providers.of(kind)
    field = provider.score_field
    results = [{"index": 2, field: 0.9}, {"index": 0, field: 0.5}, {"index": 1, field: -1.25}]
    payload: Any = {
        "cohere": {"id": "a", "results": results, "meta": {}},
        "jina": {"model": "m", "results": results, "usage": {"total_tokens": 42}},
        "voyage": {"object": "list", "data": results, "usage": {"total_tokens": 42}},
        "tei": results,
    }[kind]
    scores, tokens = rerank_providers.scores(provider, json.dumps(payload).encode(), 3)
    assert scores.tolist() == [0.5, -1.25, pytest.approx(0.9)]
    assert tokens == (42 if kind in ("jina", "voyage") else None)


BAD_ANSWERS = {
    "not JSON": (b'{"results": [', "not JSON"),
    "no results": (b'{"meta": {}}', "not a list of results"),
    "one missing": (b'{"results": [{"index": 0, "relevance_score": 1}]}', "1 scores for 2"),
    "one too many": (
        b'{"results": [{"index": 0, "relevance_score": 1}, {"index": 1, "relevance_score": 1},'
        b' {"index": 1, "relevance_score": 1}]}',
        "3 scores for 2",
    ),
    "an index twice": (
        b'{"results": [{"index": 1, "relevance_score": 1}, {"index": 1, "relevance_score": 2}]}',
        "index 1 answered twice",
    ),
    "an index out of range": (
        b'{"results": [{"index": 0, "relevance_score": 1}, {"index": 2, "relevance_score": 2}]}',
        "index 2, not one of 0..1",
    ),
    "a negative index": (
        b'{"results": [{"index": 0, "relevance_score": 1}, {"index": -1, "relevance_score": 2}]}',
        "index -1",
    ),
    "an index that is not an integer": (
        b'{"results": [{"index": 0, "relevance_score": 1}, {"index": true, "relevance_score": 2}]}',
        "index True",
    ),
    "NaN": (
        b'{"results": [{"index": 0, "relevance_score": NaN}, {"index": 1, "relevance_score": 2}]}',
        "not a finite number",
    ),
    "infinity": (
        b'{"results": [{"index": 0, "relevance_score": 1}, {"index": 1, "relevance_score": -Infinity}]}',
        "not a finite number",
    ),
    "past float32": (
        b'{"results": [{"index": 0, "relevance_score": 1e39}, {"index": 1, "relevance_score": 2}]}',
        "not a finite number",
    ),
    "a string": (
        b'{"results": [{"index": 0, "relevance_score": "0.9"}, {"index": 1, "relevance_score": 2}]}',
        "not a finite number",
    ),
    "no score": (b'{"results": [{"index": 0}, {"index": 1, "relevance_score": 2}]}', "None"),
    "not an object": (b'{"results": [1, 2]}', "result 0 is not an object"),
}


@pytest.mark.parametrize("case", sorted(BAD_ANSWERS))
def test_bad_answers_are_refused_whole(case: str) -> None:
    body, message = BAD_ANSWERS[case]
    with pytest.raises(BadResponse, match=message):
        rerank_providers.scores(rerank_providers.of("cohere"), body, 2)


@pytest.mark.parametrize(
    "fault", ["wrong_count", "dup_index", "bad_index", "nan_score", "malformed", "truncated"]
)
def test_a_bad_answer_is_asked_again(fault: str) -> None:
    with RerankServer(kind="cohere", api_key=KEY) as server:
        server.faults = [fault]
        scores = reranker_for(spec_for(server)).score(QUESTION, PASSAGES)
        assert server.faults_served == {fault: 1} and len(server.requests) == 2
    np.testing.assert_allclose(scores, expected(PASSAGES), rtol=1e-6)


def test_a_shuffled_answer_is_a_good_one() -> None:
    with RerankServer(kind="voyage", api_key=KEY) as server:
        server.faults = ["shuffled"]
        scores = reranker_for(spec_for(server)).score(QUESTION, PASSAGES)
        assert len(server.requests) == 1
    np.testing.assert_allclose(scores, expected(PASSAGES), rtol=1e-6)


def test_a_deep_rerank_goes_in_balanced_requests_of_at_most_max_documents() -> None:
    """200 passages over text-embeddings-inference's 32 per request: 7 requests (29 or 28
    each), at most max_in_flight of them at once, their scores put together in order."""
    passages = [f"passage {i} about {'refunds' if i % 7 == 0 else 'shipping'}" for i in range(200)]
    with RerankServer(kind="tei") as server:
        server.gather = 3  # held until three are in flight together (or 3 s)
        spec = spec_for(server, credential=None, max_documents=32, max_in_flight=3)
        scores = reranker_for(spec, key=None).score("refunds", passages)
        assert server.violations == []
        sizes = [len(d) for d in server.documents()]
        assert sorted(sizes) == [28] * 3 + [29] * 4 and max(sizes) <= 32
        assert server.max_concurrent == 3
        assert all(r["authorization"] is None for r in server.requests)  # no key: none sent
    np.testing.assert_allclose(scores, [overlap("refunds", p) for p in passages], rtol=1e-6)


def test_passages_are_cut_before_they_are_sent() -> None:
    """A row of megabytes is not sent whole: about max_tokens x 16 characters of it."""
    huge = "refund " * 200_000  # 1.4 MB
    with RerankServer(kind="jina", api_key=KEY) as server:
        reranker_for(spec_for(server, max_tokens=100)).score(QUESTION, ["short", huge])
        sent = server.documents()[0]
    assert sent[0] == "short" and sent[1] == huge[:1600]


def test_no_passages_no_request() -> None:
    with RerankServer(kind="cohere", api_key=KEY) as server:
        assert reranker_for(spec_for(server)).score(QUESTION, []).shape == (0,)
        assert server.requests == []


def test_a_short_retry_after_is_waited_and_a_long_one_is_not() -> None:
    sleeps: list[float] = []
    with RerankServer(kind="cohere", api_key=KEY) as server:
        reranker = reranker_for(spec_for(server), sleeps=sleeps)
        server.retry_after = 2.0
        server.faults = ["429"]
        np.testing.assert_allclose(
            reranker.score(QUESTION, PASSAGES), expected(PASSAGES), rtol=1e-6
        )
        assert max(sleeps) >= 2.0 and len(server.requests) == 2

        server.retry_after = 60.0
        server.faults = ["429"]
        with pytest.raises(exceptions.ProviderUnavailable, match="retry after 60 s") as e:
            reranker.score(QUESTION, PASSAGES)
        assert e.value.retry_after == 60.0
        assert len(server.requests) == 3  # not asked again: the search answers 503 at once


def test_a_provider_down_is_unavailable_after_the_retries_and_opens_the_circuit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(remote_reranker, "ATTEMPTS", 2)
    with RerankServer(kind="voyage", api_key=KEY) as server:
        server.down = True
        reranker = reranker_for(spec_for(server))
        for _ in range(2):
            with pytest.raises(exceptions.ProviderUnavailable, match="HTTP 500"):
                reranker.score(QUESTION, PASSAGES)
        with pytest.raises(exceptions.ProviderUnavailable, match=r"HTTP 500|circuit open"):
            reranker.score(QUESTION, PASSAGES)
        assert reranker.breaker.is_open  # 5 failures in a row
        asked = len(server.requests)
        with pytest.raises(exceptions.ProviderUnavailable, match="circuit open"):
            reranker.score(QUESTION, PASSAGES)
        assert len(server.requests) == asked  # not even sent


@pytest.mark.parametrize("status", ["timeout", "reset"])
def test_a_lost_answer_is_asked_again(status: str) -> None:
    with RerankServer(kind="tei") as server:
        server.stall_seconds = 2.0
        server.faults = [status]
        spec = spec_for(server, credential=None, timeout_seconds=0.5)
        scores = reranker_for(spec, key=None).score(QUESTION, PASSAGES)
        assert server.faults_served == {status: 1}
    np.testing.assert_allclose(scores, expected(PASSAGES), rtol=1e-6)


def test_a_refused_key_is_refused_and_never_shown() -> None:
    with RerankServer(kind="jina", api_key="jina_THEOTHERKEY0123456789") as server:
        server.echo_key_in_errors = True
        with pytest.raises(exceptions.ProviderRefused, match="credential 'test' was refused") as e:
            reranker_for(spec_for(server)).score(QUESTION, PASSAGES)
        assert KEY not in str(e.value) and KEY[:8] not in str(e.value)
        assert e.value.__context__ is None and e.value.__cause__ is None


def test_no_key_and_plain_http_are_refused_before_anything_is_sent() -> None:
    with RerankServer(kind="cohere", api_key=KEY) as server:
        with pytest.raises(exceptions.ProviderRefused, match="no API key for credential 'test'"):
            reranker_for(spec_for(server), key=None).score(QUESTION, PASSAGES)
        assert server.requests == []
    far = RerankerSpec.from_row(
        {
            "name": "far",
            "provider": "cohere",
            "endpoint": "http://rerank.example.com/v2",
            "remote_model": "m",
            "credential": "cohere",
        }
    )
    with pytest.raises(exceptions.ProviderRefused, match="over plain http"):
        reranker_for(far).score(QUESTION, PASSAGES)


def test_an_unknown_kind_is_refused_by_name() -> None:
    with pytest.raises(exceptions.ConfigError, match="this worker knows cohere, jina, tei, voyage"):
        RerankerSpec.from_row({"name": "x", "provider": "rerankly", "endpoint": "https://x"})


def test_the_kinds_keys_are_found_and_masked(tmp_path: Any) -> None:
    assert keys.RERANK_CREDENTIAL_VARIABLES == {
        "cohere": "COHERE_API_KEY",
        "jina": "JINA_API_KEY",
        "voyage": "VOYAGE_API_KEY",
    }
    found, where = keys.find_key(
        "voyage", key_dir=None, variables={"VOYAGE_API_KEY": Secret("pa-0123456789abcdef")}
    )
    assert found == Secret("pa-0123456789abcdef") and where == "VOYAGE_API_KEY"
    (tmp_path / "cohere").write_text("cohere-file-key\n")
    found, where = keys.find_key(
        "cohere", key_dir=str(tmp_path), variables={"COHERE_API_KEY": Secret("from-variable")}
    )
    assert found == Secret("cohere-file-key") and where.startswith("file ")
    message = keys.clean("bad key jina_abcdef0123456789 and pa-abcdefghijkl", None)
    assert "jina_abcdef" not in message and "pa-abcdefgh" not in message
