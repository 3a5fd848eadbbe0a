"""A provider's circuits (worker/models/remote/breaker.py): a failure opens only the circuit it
is about (docs/providers.md, "When it fails").

Several models share one stand-in host (tests/support/provider_server.py), as they share a
gateway (LiteLLM, OpenRouter, a vLLM router): one model answering garbage or never answering
opened the circuit of the whole host, every other model deferred with that model's error ("bad
answer: the answer is not JSON ... '<html>proxy error'"), and a model's own problem (no API key)
showed only once the failing model was gone. A failure of the host (5xx, no connection) still
opens the host's circuit, and its reason names the failure and the model whose request met it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.support.provider_server import ProviderServer
from tests.support.remote_clients import api_key, closed_after_test
from worker import exceptions
from worker.models.remote import breaker as breakers
from worker.models.remote.client import RemoteModel
from worker.models.remote.spec import RemoteSpec
from worker.models.remote.tokens import EstimatedTokens


@pytest.fixture
def server() -> Iterator[ProviderServer]:
    with ProviderServer(kind="openai", dims=8) as stand_in:
        stand_in.stall_seconds = 1.0
        yield stand_in


@pytest.fixture
def breaker(server: ProviderServer) -> breakers.Breaker:
    return breakers.Breaker(f"127.0.0.1:{server.port}", threshold=2, open_seconds=60)


def model(
    name: str,
    breaker: breakers.Breaker,
    endpoint: str,
    *,
    credential: str | None = None,
    key: str | None = None,
) -> RemoteModel:
    spec = RemoteSpec.from_row(
        {
            "name": name,
            "provider": "openai",
            "endpoint": endpoint,
            "remote_model": f"{name}-upstream",
            "dimensions": 8,
            "max_tokens": 512,
            "credential": credential,
            "timeout_seconds": 0.5,
        }
    )
    return closed_after_test(
        RemoteModel(
            spec,
            api_key=api_key(key),
            counter=EstimatedTokens(),
            breaker=breaker,
            sleep=lambda _: None,
        )
    )


@pytest.mark.parametrize(
    ("fault", "said"),
    [("malformed", "bad answer"), ("timeout", "timeout: no answer within 0.5 s")],
)
def test_a_model_that_fails_alone_opens_its_own_circuit_not_the_hosts(
    server: ProviderServer, breaker: breakers.Breaker, fault: str, said: str
) -> None:
    server.model_faults["bad-upstream"] = fault
    bad = model("bad", breaker, server.base_url)
    good = model("good", breaker, server.base_url)
    host = f"127.0.0.1:{server.port}"
    for _ in range(2):  # (each call its retries: the threshold passed)
        with pytest.raises(exceptions.ProviderUnavailable, match=said):
            bad.embed(["garbage comes back"])

    assert good.embed(["still answered"]).shape == (1, 8)
    assert not breaker.is_open and breaker.problem("good") is None
    reason = breaker.problem("bad") or ""
    assert reason.startswith(f"model bad at {host} is failing ({said}"), reason
    assert "circuit open" in reason
    sent = len(server.requests)
    with pytest.raises(exceptions.ProviderUnavailable, match=f"model bad at {host} is failing"):
        bad.embed(["not sent"])
    assert len(server.requests) == sent


def test_a_failure_of_the_host_opens_its_circuit_naming_the_failure_and_the_model(
    server: ProviderServer, breaker: breakers.Breaker
) -> None:
    server.down = True
    with pytest.raises(exceptions.ProviderUnavailable, match="HTTP 500"):
        model("first", breaker, server.base_url).embed(["the server had an error"])
    assert breaker.is_open
    expected = (
        f"the provider at 127.0.0.1:{server.port} is failing (HTTP 500: the server had an"
        " error, from model first): circuit open"
    )
    with pytest.raises(exceptions.ProviderUnavailable) as other:
        model("other", breaker, server.base_url).embed(["held back with the rest"])
    assert str(other.value).startswith(expected), other.value
    assert (breaker.problem("other") or "").startswith(expected)


def test_no_connection_is_the_hosts_failure() -> None:
    with socket.socket() as free:  # a port nothing listens on: connection refused
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    breaker = breakers.Breaker(f"127.0.0.1:{port}", threshold=2, open_seconds=60)
    with pytest.raises(exceptions.ProviderUnavailable, match="connection error"):
        model("first", breaker, f"http://127.0.0.1:{port}/v1").embed(["refused"])
    assert breaker.is_open
    assert "connection error" in (breaker.problem("second") or "")


def test_a_missing_key_is_the_models_reason_whatever_the_hosts_circuit(
    server: ProviderServer, breaker: breakers.Breaker
) -> None:
    server.down = True
    with pytest.raises(exceptions.ProviderUnavailable):
        model("first", breaker, server.base_url).embed(["opens the host's circuit"])
    assert breaker.is_open
    keyless = model("keyless", breaker, server.base_url, credential="openai")
    with pytest.raises(exceptions.ProviderRefused, match="no API key for credential 'openai'"):
        keyless.embed(["its own problem first"])


def test_a_rate_limit_holds_back_the_hosts_models_naming_the_model_it_met(
    server: ProviderServer, breaker: breakers.Breaker
) -> None:
    """A 429 is the host's (every request to it waits out the Retry-After), not a failure: the
    other models' rows wait saying whose request met it, and no circuit opens."""
    server.model_faults["limited-upstream"] = "429"
    server.retry_after = 30  # (past the inline wait)
    with pytest.raises(exceptions.ProviderUnavailable, match=r"rate limited \(429\); retry"):
        model("limited", breaker, server.base_url).embed(["met the limit"])
    sent = len(server.requests)
    with pytest.raises(
        exceptions.ProviderUnavailable, match=r"rate limited \(429 to model limited\)"
    ):
        model("other", breaker, server.base_url).embed(["waits"])
    assert len(server.requests) == sent
    assert not breaker.is_open and breaker.problem("other") is None
