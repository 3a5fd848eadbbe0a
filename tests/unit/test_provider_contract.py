"""The providers' request and answer shapes, as their published documentation gives them.

Neither service is reachable from here, so the client talks to stand-ins
(tests/support/provider_server.py) that enforce the documented request contract and answer in
the documented shape. What was checked, and where:

- OpenAI, "Create embeddings" (API reference, POST /embeddings; the openai-node
  EmbeddingCreateParams and the Go SDK's CreateEmbeddingResponse carry the same text): `input` a
  string or array of strings, not empty, at most 2048 of them, each at most 8192 tokens and
  300,000 tokens summed over a request; `model`; `encoding_format` float or base64;
  `dimensions` (text-embedding-3 and later only). Answer: {"object": "list", "data":
  [{"object": "embedding", "index", "embedding"}], "model", "usage": {"prompt_tokens",
  "total_tokens"}}. Errors: {"error": {"message", "type", "code"}}.
- Hugging Face Inference Providers, "Feature Extraction" (huggingface.co/docs/
  inference-providers/tasks/feature-extraction) and the @huggingface/tasks schema
  (tasks/feature-extraction/spec/input.json, output.json): Authorization "Bearer hf_...";
  payload `inputs` (string or string[]), optional `normalize`, `prompt_name`, `truncate`,
  `truncation_direction`; answer an array of float arrays; the @huggingface/inference client
  types the answer (number | number[] | number[][])[] (token vectors when the model does not
  pool). A serverless model still loading answers 503 {"error": "... is currently loading",
  "estimated_time": seconds}.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest

from tests.support.provider_server import ProviderServer, fake_vector
from tests.support.remote_clients import api_key, closed_after_test
from worker import exceptions
from worker.models.remote import breaker as breakers
from worker.models.remote import protocol, providers
from worker.models.remote.client import RemoteModel
from worker.models.remote.spec import RemoteSpec
from worker.models.remote.tokens import EstimatedTokens
from worker.models.remote.transport import retry_after

KEY = "sk-test-CONTRACT-0123456789abcdef"


def spec_for(server: ProviderServer, **overrides: object) -> RemoteSpec:
    row: dict[str, object] = {
        "name": f"test-{server.kind}",
        "provider": server.kind,
        "endpoint": server.base_url,
        "remote_model": "test-model",
        "dimensions": server.dims,
        "max_tokens": 512,
        "pooling": "mean",
        "credential": "test",
    }
    row.update(overrides)
    return RemoteSpec.from_row(row)


def parser_spec(provider: str, endpoint: str) -> RemoteSpec:
    """A model of two dimensions for the answer parsers (no server behind `endpoint`)."""
    return RemoteSpec.from_row(
        {
            "name": "m",
            "provider": provider,
            "endpoint": endpoint,
            "remote_model": "m",
            "dimensions": 2,
            "max_tokens": 10,
        }
    )


def model_for(spec: RemoteSpec, key: str | None = KEY) -> RemoteModel:
    model = RemoteModel(
        spec,
        api_key=api_key(key),
        counter=EstimatedTokens(),
        breaker=breakers.Breaker(spec.host),
        sleep=lambda _: None,
    )
    return closed_after_test(model)


@pytest.fixture
def openai_server() -> Iterator[ProviderServer]:
    with ProviderServer(kind="openai", dims=8, api_key=KEY) as server:
        yield server


@pytest.fixture
def hf_server() -> Iterator[ProviderServer]:
    with ProviderServer(kind="huggingface", dims=8, api_key=KEY) as server:
        yield server


def test_openai_request_follows_the_api_reference(openai_server: ProviderServer) -> None:
    model = model_for(spec_for(openai_server, send_dimensions=True))
    texts = ["first text", "second", "ünïcödé ✓"]
    vectors = model.embed(texts)
    assert openai_server.violations == []
    (request,) = openai_server.requests
    assert request["authorization"] == f"Bearer {KEY}"
    assert request["body"] == {
        "model": "test-model",
        "input": texts,
        "encoding_format": "float",
        "dimensions": 8,
    }
    for text, vector in zip(texts, vectors, strict=True):
        assert np.allclose(vector, fake_vector(text, 8), atol=1e-6)


def test_openai_dimensions_are_sent_only_when_registered(openai_server: ProviderServer) -> None:
    model_for(spec_for(openai_server)).embed(["x"])
    assert "dimensions" not in openai_server.requests[0]["body"]


def test_openai_request_limits_are_kept(openai_server: ProviderServer) -> None:
    """At most 2048 inputs per request (OpenAI's documented maximum) even when registered
    higher, and at most max_request_tokens tokens summed."""
    model = model_for(spec_for(openai_server, max_inputs=2048, max_request_tokens=40))
    texts = [f"text number {i:05d} padded!" for i in range(30)]  # 9 estimated tokens each
    model.embed(texts)
    assert openai_server.violations == []
    sizes = [len(r["inputs"]) for r in openai_server.requests]
    assert sum(sizes) == 30 and max(sizes) == 4  # each request sent once, 4 x 9 <= 40
    many = model_for(spec_for(openai_server, max_inputs=2048, max_in_flight=1))
    openai_server.requests.clear()
    many.embed([f"t{i}" for i in range(5000)])
    assert openai_server.violations == []
    # Three requests are needed; their sizes balanced (not 2048, 2048, 904).
    assert sorted(len(r["inputs"]) for r in openai_server.requests) == [1666, 1667, 1667]


@pytest.mark.parametrize(
    ("texts", "in_flight", "sizes"),
    [
        (128, 4, [32, 32, 32, 32]),  # EMBED_BATCH_SIZE's default: all four slots used
        (130, 4, [31, 33, 33, 33]),
        (20, 4, [10, 10]),  # no request of fewer than MIN_INPUTS_PER_REQUEST for the spread
        (7, 4, [7]),  # a live job's few rows: one request
        (128, 1, [128]),
        (2500, 4, [625, 625, 625, 625]),
    ],
)
def test_a_batch_is_spread_over_the_requests_in_flight(
    openai_server: ProviderServer, texts: int, in_flight: int, sizes: list[int]
) -> None:
    model = model_for(spec_for(openai_server, max_inputs=2048, max_in_flight=in_flight))
    groups = model.requests([1] * texts)
    assert sorted(len(g) for g in groups) == sizes
    assert [i for g in groups for i in g] == list(range(texts))  # in order, each once
    tight = model_for(spec_for(openai_server, max_request_tokens=100, max_in_flight=in_flight))
    assert all(len(g) * 10 <= 100 for g in tight.requests([10] * texts))  # token limit kept


def test_openai_answer_shape_is_parsed_in_index_order() -> None:
    spec = parser_spec("openai", "https://api.example/v1")
    body = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 1, "embedding": [0.0, 2.0]},
            {"object": "embedding", "index": 0, "embedding": [3.0, 0.0]},
        ],
        "model": "m",
        "usage": {"prompt_tokens": 7, "total_tokens": 7},
    }
    answer = protocol.parse(spec, json.dumps(body).encode(), 2)
    assert [v.tolist() for v in answer.vectors if v is not None] == [[1.0, 0.0], [0.0, 1.0]]
    assert answer.tokens == 7


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ([[1, 0]], "1 embeddings for 2 inputs"),
        ([[1, 0], [0, 1], [1, 1]], "3 embeddings for 2 inputs"),
        ("dup", "index 0 answered twice"),
        ("range", "has index 5"),
        ("text", "not a list of numbers"),
    ],
)
def test_openai_answers_that_do_not_match_the_request_are_refused(
    data: object, problem: str
) -> None:
    spec = parser_spec("openai", "https://x/v1")
    if data == "dup":
        items = [{"index": 0, "embedding": [1, 0]}, {"index": 0, "embedding": [0, 1]}]
    elif data == "range":
        items = [{"index": 0, "embedding": [1, 0]}, {"index": 5, "embedding": [0, 1]}]
    elif data == "text":
        items = [{"index": 0, "embedding": "AAAA"}, {"index": 1, "embedding": [0, 1]}]
    else:
        assert isinstance(data, list)
        items = [{"index": i, "embedding": v} for i, v in enumerate(data)]
    with pytest.raises(providers.BadResponse, match=problem):
        protocol.parse(spec, json.dumps({"data": items}).encode(), 2)


def test_a_wrong_dimension_and_a_nan_are_told_apart() -> None:
    spec = parser_spec("openai", "https://x/v1")
    with pytest.raises(providers.DimensionMismatch, match="3-dimensional"):
        protocol.parse(
            spec, json.dumps({"data": [{"index": 0, "embedding": [1, 2, 3]}]}).encode(), 1
        )
    answer = protocol.parse(
        spec,
        b'{"data": [{"index": 0, "embedding": [NaN, 1]}, {"index": 1, "embedding": [0, 1]}]}',
        2,
    )
    assert answer.vectors[0] is None and "NaN" in answer.errors[0]
    assert answer.vectors[1] is not None


def test_hugging_face_request_and_answer_follow_the_task_spec(hf_server: ProviderServer) -> None:
    model = model_for(spec_for(hf_server))
    vectors = model.embed(["a", "b"])
    assert hf_server.violations == []
    (request,) = hf_server.requests
    assert request["body"] == {"inputs": ["a", "b"], "truncate": True}
    assert request["authorization"] == f"Bearer {KEY}"
    assert np.allclose(vectors[1], fake_vector("b", 8), atol=1e-6)


def test_hugging_face_token_vectors_are_pooled() -> None:
    with ProviderServer(kind="huggingface", dims=8, token_level=True) as server:
        model = model_for(spec_for(server, credential=None), key=None)
        vectors = model.embed(["pooled"])
    assert np.allclose(vectors[0], fake_vector("pooled", 8), atol=1e-6)


def test_hugging_face_single_flat_answer_is_one_vector() -> None:
    spec = parser_spec("huggingface", "https://x/models/m")
    answer = protocol.parse(spec, b"[3.0, 4.0]", 1)
    assert answer.vectors[0] is not None and answer.vectors[0].tolist() == pytest.approx([0.6, 0.8])


def test_hugging_face_model_loading_waits_its_estimated_time(hf_server: ProviderServer) -> None:
    waits: list[float] = []
    model = model_for(spec_for(hf_server))
    model._sleep = waits.append
    hf_server.retry_after = 2.5
    hf_server.faults = ["loading"]
    model.embed(["x"])
    assert max(waits) >= 2.5
    assert hf_server.faults_served == {"loading": 1}


def test_error_messages_are_read_from_either_shape() -> None:
    assert (
        protocol.error_message(b'{"error": {"message": "Bad input", "type": "x"}}') == "Bad input"
    )
    assert protocol.error_message(b'{"error": "Model is loading"}') == "Model is loading"
    assert protocol.error_message(b'{"error": ["first", "second"]}') == "first"
    assert "not json" in protocol.error_message(b"not json")


def test_retry_after_forms() -> None:
    assert retry_after({"retry-after": "3"}) == 3
    assert retry_after({"retry-after-ms": "1500"}) == 1.5
    assert (
        retry_after({"x-ratelimit-reset-requests": "1m30s", "x-ratelimit-reset-tokens": "120ms"})
        == 90
    )
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0
    assert retry_after({}) is None


def test_unauthorized_is_a_refusal_that_names_the_credential(openai_server: ProviderServer) -> None:
    model = model_for(spec_for(openai_server), key="sk-wrong-key-000000000000")
    with pytest.raises(exceptions.ProviderRefused, match="credential 'test' was refused"):
        model.embed(["x"])


def test_openai_refuses_inputs_and_requests_over_its_token_limits(
    openai_server: ProviderServer,
) -> None:
    """The stand-in refuses as OpenAI does (400, its message): an input over the model's
    context (only that input fails; the client splits the request to find it), and a request
    over the per-request budget (split by the client until each part fits: nothing fails)."""
    openai_server.max_input_tokens = 20  # one token per 4 characters (the stand-in's count)
    registered_too_high = model_for(spec_for(openai_server, max_tokens=512))
    with pytest.raises(exceptions.InputRejected, match="maximum context length is 20 tokens"):
        registered_too_high.embed(["short", "x" * 200])
    assert '"code": null' in openai_server.token_refusals[0]

    openai_server.max_input_tokens = None
    openai_server.max_request_tokens = 30
    openai_server.token_refusals.clear()
    model = model_for(spec_for(openai_server, max_request_tokens=1000))
    texts = [f"{i:02d} " + "y" * 37 for i in range(4)]  # 10 tokens each: 40 > 30 together
    vectors = model.embed(texts)
    assert "max_tokens_per_request" in openai_server.token_refusals[0]
    assert all(sum(r["tokens"]) <= 30 for r in openai_server.requests)
    for text, vector in zip(texts, vectors, strict=True):
        assert np.allclose(vector, fake_vector(text, 8), atol=1e-6)


def test_hugging_face_refuses_long_inputs_unless_asked_to_truncate(
    hf_server: ProviderServer,
) -> None:
    """text-embeddings-inference's 413 for an input over its limit, unless "truncate": true,
    which the client always sends (and it cuts the input itself before: the request is
    within the limit either way)."""
    hf_server.max_input_tokens = 20
    assert hf_server._token_refusal({"inputs": ["x"]}, [21]) == (
        413,
        {
            "error": "Input validation error: `inputs` must have less than 20 tokens. Given: 21",
            "error_type": "Validation",
        },
    )
    model = model_for(spec_for(hf_server, max_tokens=20))
    model.embed(["z" * 400])
    assert hf_server.token_refusals == []
    (request,) = hf_server.requests
    assert request["body"]["truncate"] is True and request["tokens"][0] <= 20
