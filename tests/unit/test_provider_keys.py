"""Keys are data we check, never text we print; answers are bounded by what was asked; a key
goes over plain http only to a literal loopback address (issue 36, defects 5, 7 and 9).

The end-to-end checks (a worker with a bad key, a refused endpoint) are in
tests/security/test_provider_keys.py."""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.provider_server import ProviderServer
from tests.unit.test_provider_contract import model_for, spec_for
from worker import exceptions
from worker.config import Settings
from worker.models.remote import breaker as breakers
from worker.models.remote import client, protocol, transport
from worker.models.remote.spec import RemoteSpec
from worker.secret import Secret

KEY = "sk-proj-UNIT0123456789abcdefXYZ"
SECOND = "sk-proj-SECONDline9876543210"
PARTS = (KEY, KEY[:10], KEY[-10:], SECOND)


def leaks(text: str) -> list[str]:
    return [part for part in PARTS if part in text]


def chain(exc: BaseException | None) -> str:
    """Everything an exception and those chained to it (cause or context) say, as a logged
    traceback would, and their reprs and arguments besides."""
    seen: list[str] = []
    while exc is not None:
        seen.append(f"{exc!r} {exc} {exc.args!r} {getattr(exc, 'object', '')!r}")
        seen.append("".join(traceback.format_exception(exc)))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(seen)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (f"{KEY}\n{SECOND}\n", "more than one line"),
        (f"{KEY}\n\n", "more than one line"),
        (f"{KEY}\u201d\n", "outside printable ASCII"),
        (f"sk-proj-UNIT 0123456789abcdefXYZ\n{SECOND}", "more than one line"),
        ("sk-proj-UNIT\t0123456789abcdefXYZ", "whitespace or a control character"),
        (f"{KEY}\x00", "whitespace or a control character"),
    ],
)
def test_a_malformed_key_file_is_an_error_that_names_the_file_not_the_key(
    tmp_path: Path, content: str, problem: str
) -> None:
    (tmp_path / "openai").write_text(content)
    settings = Settings.from_env({"EMBED_API_KEY_DIR": str(tmp_path), "OPENAI_API_KEY": KEY})
    with pytest.raises(exceptions.ConfigError) as raised:
        settings.api_key("openai")  # no fall back to the variable: the file is what is meant
    message = str(raised.value)
    assert (
        message.startswith(f"EMBED_API_KEY_DIR: {tmp_path}/openai: the key ") and problem in message
    )
    assert leaks(chain(raised.value)) == []


def test_a_key_file_that_is_not_text_chains_nothing_that_holds_it(tmp_path: Path) -> None:
    """A UnicodeDecodeError holds the bytes read: no error we raise keeps it as its context."""
    (tmp_path / "openai").write_bytes(KEY.encode() + b"\xff")
    with pytest.raises(exceptions.ConfigError) as raised:
        Settings(api_key_dir=str(tmp_path)).api_key("openai")
    assert raised.value.__context__ is None and leaks(chain(raised.value)) == []


def test_a_malformed_key_variable_is_an_error_that_names_the_variable(tmp_path: Path) -> None:
    """Settings are read at start-up without looking at the key: a bad key stops only its
    provider's targets (when it is asked for), never the worker."""
    settings = Settings.from_env({"OPENAI_API_KEY": f"\u201c{KEY}\u201d", "HF_TOKEN": "hf_ok123"})
    with pytest.raises(exceptions.ConfigError) as raised:
        settings.api_key("openai")
    assert str(raised.value).startswith("OPENAI_API_KEY: the key ")
    assert "outside printable ASCII" in str(raised.value)
    assert leaks(chain(raised.value)) == []
    assert settings.api_key("huggingface") == (Secret("hf_ok123"), "HF_TOKEN")


@pytest.mark.parametrize("ending", ["", "\n", "\r\n", "  \n"])
def test_a_key_file_may_end_with_one_newline(tmp_path: Path, ending: str) -> None:
    (tmp_path / "openai").write_text(KEY + ending, newline="")
    key, where = Settings(api_key_dir=str(tmp_path)).api_key("openai")
    assert key == Secret(KEY) and where == f"file {tmp_path}/openai"


def test_a_key_that_cannot_be_sent_is_refused_without_the_key() -> None:
    """Past the check when read (a key handed over by other code): the header that cannot be
    built is the model's refusal, its text and its chain free of the key, and no exception
    escapes but the provider's (which defers the target, never stops the worker)."""
    breakers.reset()
    with ProviderServer(kind="openai", dims=8) as server:
        for bad in (f"{KEY}\n{SECOND}", f"{KEY}\u201d"):
            model = model_for(spec_for(server), key=bad)
            with pytest.raises(exceptions.ProviderRefused) as raised:
                model.embed(["text"])
            assert "cannot be sent" in str(raised.value)
            assert leaks(chain(raised.value)) == []
        assert server.requests == []


@pytest.mark.parametrize(
    ("endpoint", "allowed"),
    [
        ("http://127.0.0.1:8080/v1", True),
        ("http://127.3.4.5/v1", True),
        ("http://[::1]:8080/v1", True),
        ("http://localhost:8080/v1", True),
        ("https://api.example.com/v1", True),
        ("https://127.0.0.1.nip.io/v1", True),  # https: the key is safe on the way
        ("http://127.0.0.1.nip.io:8080/v1", False),
        ("http://127.example.com/v1", False),
        ("http://localhost.example.com/v1", False),
        ("http://127.1/v1", False),  # not a literal address: a name to resolve
        ("http://0x7f000001/v1", False),
        ("http://[::ffff:127.0.0.1]/v1", False),
        ("http://10.0.0.1/v1", False),
        ("http://tei.internal:8080/v1", False),
    ],
)
def test_plain_http_goes_only_to_a_literal_loopback_address(endpoint: str, allowed: bool) -> None:
    problem = registered(endpoint=endpoint).plain_http_problem()
    assert (problem is None) is allowed, problem
    if not allowed:
        assert problem is not None and endpoint in problem
    # Without a key there is nothing to protect: any host (a self-hosted server).
    assert registered(endpoint=endpoint, credential=None).plain_http_problem() is None


def registered(**overrides: object) -> RemoteSpec:
    row: dict[str, object] = {
        "name": "m",
        "provider": "openai",
        "endpoint": "https://api.example.com/v1",
        "remote_model": "test-model",
        "dimensions": 8,
        "max_tokens": 512,
        "credential": "openai",
        **overrides,
    }
    return RemoteSpec.from_row(row)


@pytest.fixture
def padded_server() -> Iterator[ProviderServer]:
    breakers.reset()
    with ProviderServer(kind="openai", dims=8) as server:
        yield server
    breakers.reset()


def test_an_answer_larger_than_the_request_asks_for_is_refused(
    padded_server: ProviderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-input request of 8 dimensions takes a few kilobytes at most: an answer of 8 MB
    (valid JSON, padded) is the provider's fault, retried, then the rows wait."""
    monkeypatch.setattr(client, "BACKOFF", lambda state: 0.0)
    padded_server.pad_bytes = 8 * 1024 * 1024
    model = model_for(spec_for(padded_server))
    with pytest.raises(exceptions.ProviderUnavailable) as raised:
        model.embed(["one input"])
    limit = protocol.answer_limit(model.spec, 1)
    assert f"larger than {limit:,} bytes" in str(raised.value)
    assert len(padded_server.requests) == client.ATTEMPTS  # retried as any bad answer
    padded_server.pad_bytes = 0
    assert model.embed(["one input"]).shape == (1, 8)


def test_the_bound_grows_with_inputs_and_dimensions() -> None:
    small, large = registered(dimensions=8), registered(dimensions=3072)
    assert protocol.answer_limit(small, 1) < 100_000
    assert protocol.answer_limit(large, 1) < protocol.answer_limit(large, 2) < 1_000_000
    # OpenAI's largest request, pretty-printed as OpenAI prints it, still fits.
    item = {"object": "embedding", "index": 2047, "embedding": [-0.012345678901234567] * 3072}
    one = len(json.dumps(item, indent=8))
    assert one * 2048 < min(protocol.answer_limit(large, 2048), transport.MAX_RESPONSE_BYTES)
    # Hugging Face may answer a vector per token (a model without pooling).
    hf = registered(endpoint="https://x/m", provider="huggingface", dimensions=384)
    tokens = [[[0.1234567] * 384] * (hf.max_tokens + 2)]
    assert len(json.dumps(tokens)) < protocol.answer_limit(hf, 1)


class _Endless:
    """A response that never ends: counts what was read from it."""

    def __init__(self) -> None:
        self.read_bytes = 0

    def read1(self, n: int) -> bytes:
        self.read_bytes += n
        return b" " * n

    def close(self) -> None:
        pass


def test_reading_stops_once_past_the_bound() -> None:
    """Not read then measured: the read stops at the bound, whatever the server sends."""
    endless = _Endless()
    conn = type("Conn", (), {"sock": None})()
    with pytest.raises(transport.AnswerTooLarge):
        transport._read(conn, endless, deadline=float("inf"), limit=100_000)  # type: ignore[arg-type]
    assert endless.read_bytes <= 100_001
