"""The provider's circuit breaker settles on every outcome of its probe (docs/providers.md, "When
it fails": "a probe after 5 s, doubling to 5 min, closes it").

A remote model talks to a stand-in provider (tests/support/provider_server.py) through a breaker
whose clock the test moves: the provider fails until the circuit opens, the open time passes,
the probe meets one fault or another, and then the provider is healthy. Whatever the probe met,
a later request must reach the provider again (before the fix, a probe that met a 429, vectors
of another dimension, a refusal, a rejected input, or that was never sent, kept its slot: the
circuit stayed open, with no request let through, until the process restarted).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.provider_server import ProviderServer
from tests.support.remote_clients import api_key, closed_after_test
from worker import exceptions
from worker.models.remote import breaker as breakers
from worker.models.remote.client import RemoteModel
from worker.models.remote.spec import RemoteSpec
from worker.models.remote.tokens import EstimatedTokens

OPEN = 5.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> Iterator[ProviderServer]:
    with ProviderServer(kind="openai", dims=8) as stand_in:
        stand_in.stall_seconds = 1.0
        yield stand_in


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breaker(server: ProviderServer, clock: Clock) -> breakers.Breaker:
    return breakers.Breaker(f"127.0.0.1:{server.port}", threshold=2, open_seconds=OPEN, clock=clock)


def model(
    server: ProviderServer,
    breaker: breakers.Breaker,
    *,
    dims: int = 8,
    key: str | None = None,
    name: str | None = None,
) -> RemoteModel:
    spec = RemoteSpec.from_row(
        {
            "name": name or f"m{dims}",
            "provider": "openai",
            "endpoint": server.base_url,
            "remote_model": "test-model",
            "dimensions": dims,
            "max_tokens": 512,
            "credential": "test" if key else None,
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


def open_circuit(server: ProviderServer, breaker: breakers.Breaker, clock: Clock) -> None:
    """The provider fails until the circuit opens; then the open time passes."""
    server.down = True
    with pytest.raises(exceptions.ProviderUnavailable, match="HTTP 500"):
        model(server, breaker).embed(["down"])
    server.down = False
    assert breaker.is_open
    with pytest.raises(exceptions.ProviderUnavailable, match="circuit open"):
        model(server, breaker).embed(["still open"])
    clock.now += OPEN


def reaches_provider(server: ProviderServer, breaker: breakers.Breaker) -> bool:
    return reaches_provider_as(server, breaker)


def reaches_provider_as(
    server: ProviderServer, breaker: breakers.Breaker, name: str | None = None
) -> bool:
    """Whether model `name` (m8) reaches the provider (and is answered)."""
    before = len(server.requests)
    try:
        model(server, breaker, name=name).embed(["healthy again"])
    except exceptions.ProviderUnavailable:
        return False
    return len(server.requests) > before


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (None, None),
        ("reset", exceptions.ProviderUnavailable),  # no answer
    ],
)
def test_a_probe_that_is_answered_closes_and_one_that_fails_reopens_for_longer(
    server: ProviderServer,
    breaker: breakers.Breaker,
    clock: Clock,
    fault: str | None,
    error: type[Exception] | None,
) -> None:
    open_circuit(server, breaker, clock)
    server.fault_for = lambda inputs: fault
    if error is None:
        model(server, breaker).embed(["probe"])
        assert not breaker.is_open
        return
    with pytest.raises(error):
        model(server, breaker).embed(["probe"])
    server.fault_for = None
    assert breaker.is_open
    clock.now += OPEN  # the open time doubled: not yet
    assert not reaches_provider(server, breaker)
    clock.now += OPEN
    assert reaches_provider(server, breaker)
    assert not breaker.is_open


def test_a_probe_answered_badly_closes_the_hosts_circuit_and_opens_the_models(
    server: ProviderServer, breaker: breakers.Breaker, clock: Clock
) -> None:
    """The host answered: its other models go on; the model answered badly (a vector missing,
    every time) waits on its own circuit (tests/unit/test_provider_circuits.py)."""
    open_circuit(server, breaker, clock)
    server.fault_for = lambda inputs: "wrong_count"
    with pytest.raises(exceptions.ProviderUnavailable, match="bad answer"):
        model(server, breaker).embed(["probe"])
    server.fault_for = None
    assert not breaker.is_open
    assert "model m8 at" in (breaker.problem("m8") or "")
    assert reaches_provider_as(server, breaker, "another")  # another model of the host
    assert not reaches_provider(server, breaker)
    clock.now += OPEN
    assert reaches_provider(server, breaker)
    assert breaker.problem("m8") is None


def test_a_probe_answered_with_vectors_of_another_dimension_closes_the_circuit(
    server: ProviderServer, breaker: breakers.Breaker, clock: Clock
) -> None:
    """The provider is up; the registration is wrong (that model's target waits, refused), and
    the provider's other models are served."""
    open_circuit(server, breaker, clock)
    with pytest.raises(exceptions.ProviderRefused, match="8-dimensional"):
        model(server, breaker, dims=128).embed(["probe"])
    assert not breaker.is_open
    assert reaches_provider(server, breaker)


@pytest.mark.parametrize(
    ("probe", "error"),
    [
        ("POISON", exceptions.InputRejected),  # 400: the input's fault
        ("unauthorized", exceptions.ProviderRefused),  # 401: the key's
    ],
)
def test_a_probe_the_provider_refuses_closes_the_circuit(
    server: ProviderServer,
    breaker: breakers.Breaker,
    clock: Clock,
    probe: str,
    error: type[Exception],
) -> None:
    open_circuit(server, breaker, clock)
    if probe == "unauthorized":
        server.api_key = "the-right-key"
        with pytest.raises(error, match="HTTP 401"):
            model(server, breaker, key="a-wrong-key").embed(["probe"])
        server.api_key = None
    else:
        with pytest.raises(error, match="HTTP 400"):
            model(server, breaker).embed_with_stats(["POISON probe"])
    assert not breaker.is_open
    assert reaches_provider(server, breaker)


@pytest.mark.parametrize("fault", ["429", "loading"])
def test_a_probe_throttled_past_the_inline_wait_keeps_the_circuit_open_only_until_then(
    server: ProviderServer, breaker: breakers.Breaker, clock: Clock, fault: str
) -> None:
    """A 429 (or a model loading) is not a failure: the open time does not double, and the next
    probe goes once its Retry-After is over."""
    open_circuit(server, breaker, clock)
    server.faults = [fault]
    server.retry_after = 60
    with pytest.raises(exceptions.ProviderUnavailable, match="retry after 60 s"):
        model(server, breaker).embed(["probe"])
    clock.now += 59
    assert not reaches_provider(server, breaker)
    clock.now += 1
    assert reaches_provider(server, breaker)
    assert not breaker.is_open


def test_a_probe_throttled_says_so_while_the_circuit_stays_open_and_nothing_after_it_closes(
    server: ProviderServer, breaker: breakers.Breaker, clock: Clock
) -> None:
    """While a probe's 429 keeps the circuit open, the reason every refused request (and so
    /readyz, and `status` for the targets deferred by it) gives is the 429, the provider's last
    word: it said the last failure's, an HTTP 500 the provider no longer answers. Closed
    again, the breaker gives no reason at all."""
    open_circuit(server, breaker, clock)
    server.faults = ["429"]
    server.retry_after = 60
    with pytest.raises(exceptions.ProviderUnavailable, match="retry after 60 s"):
        model(server, breaker).embed(["probe"])
    reason = breaker.problem() or ""
    assert "rate limited (429)" in reason and "HTTP 500" not in reason, reason
    with pytest.raises(exceptions.ProviderUnavailable) as refused:
        model(server, breaker).embed(["refused while open"])
    assert "rate limited (429)" in str(refused.value) and "HTTP 500" not in str(refused.value)
    clock.now += 60
    assert reaches_provider(server, breaker)
    assert breaker.problem() is None and breaker.last_error is None


def test_a_probe_throttled_within_the_inline_wait_is_retried_and_closes_the_circuit(
    server: ProviderServer, breaker: breakers.Breaker, clock: Clock
) -> None:
    open_circuit(server, breaker, clock)
    server.faults = ["429"]
    server.retry_after = 0.0  # (the clock does not move while the model "sleeps")
    model(server, breaker).embed(["probe"])
    assert not breaker.is_open


def test_a_probe_never_sent_gives_its_slot_back(
    server: ProviderServer, breaker: breakers.Breaker, clock: Clock
) -> None:
    """A key that cannot go in a header: the probe is refused before it is sent; the next
    request, of a model with a good key, probes."""
    open_circuit(server, breaker, clock)
    before = len(server.requests)
    with pytest.raises(exceptions.ProviderRefused, match="cannot be sent"):
        model(server, breaker, key="bad\nkey").embed(["probe"])
    assert len(server.requests) == before
    assert reaches_provider(server, breaker)


def test_a_probe_under_a_long_throttle_gives_its_slot_back(
    server: ProviderServer, breaker: breakers.Breaker, clock: Clock
) -> None:
    """A Retry-After still running when the open time ends: the probe waits it out without
    being sent, and the request after the Retry-After probes."""
    open_circuit(server, breaker, clock)
    breaker.throttle(30)
    with pytest.raises(exceptions.ProviderUnavailable, match="retry after 30 s"):
        model(server, breaker).embed(["probe"])
    clock.now += 30
    assert reaches_provider(server, breaker)


def test_a_probe_that_fails_as_the_last_one_did_leaves_the_reason_as_it_was(
    server: ProviderServer, breaker: breakers.Breaker, clock: Clock
) -> None:
    """The reason of an open circuit is recorded for the held jobs (note_deferrals), whose
    `since` starts over when it changes: it carried the failures counted and the wait doubled
    by each failed probe, and status said the jobs were held since the last probe."""
    open_circuit(server, breaker, clock)
    opened = breaker.problem("m8")
    server.down = True
    for _ in range(3):  # three probes, each failing as the first requests did
        with pytest.raises(exceptions.ProviderUnavailable, match="HTTP 500"):
            model(server, breaker).embed(["probe"])
        assert breaker.problem("m8") == opened
        clock.now += 300
    assert opened is not None and "circuit open after 2 failures in a row" in opened, opened
