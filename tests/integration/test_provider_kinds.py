"""The provider registry (worker/models/remote/providers.py): one class per kind, whose defaults
are the SQL side's (embeddings.provider_defaults()); an unknown kind fails loudly on both sides;
a new kind changes no table."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.support.defaults import assert_sql_defaults_are_the_classes
from tests.support.jobs import deferred_reason
from tests.support.process import run_cli
from worker import exceptions, exits
from worker.models.remote import keys, providers
from worker.models.remote.spec import RemoteSpec
from worker.pipeline.targets import load_remote_models
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]


def register_newer_kind(conn: Conn, dimensions: int = 8) -> None:
    """A remote model of a kind this release does not know (a newer release's row)."""
    conn.execute(
        "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling, provider, endpoint,"
        " remote_model) VALUES ('newer', %s, 512, 'mean', 'cohere', 'https://api.cohere.com/v2',"
        " 'e')",
        (dimensions,),
    )


def test_the_sql_defaults_are_the_classes(conn: Conn) -> None:
    assert_sql_defaults_are_the_classes(
        conn,
        "provider_defaults",
        {
            "provider": "name",
            "endpoint": "default_endpoint",
            "max_tokens": "max_tokens",
            "max_inputs": "max_inputs",
            "max_request_tokens": "max_request_tokens",
        },
        providers.PROVIDERS.values(),
    )
    assert keys.CREDENTIAL_VARIABLES == {"openai": "OPENAI_API_KEY", "huggingface": "HF_TOKEN"}


def test_register_model_fills_in_the_kinds_defaults(conn: Conn) -> None:
    conn.execute("SELECT embeddings.register_model('hf-model', 384, provider => 'huggingface')")
    row = conn.execute(
        "SELECT endpoint, max_tokens, max_inputs, max_request_tokens, credential"
        " FROM embeddings.models WHERE name = 'hf-model'"
    ).fetchone()
    kind = providers.of("huggingface")
    assert row == (
        kind.default_endpoint.replace("{model}", "hf-model"),
        kind.max_tokens,
        kind.max_inputs,
        kind.max_request_tokens,
        "huggingface",
    )


def test_an_unknown_kind_is_refused_by_name_in_sql(conn: Conn) -> None:
    with pytest.raises(
        psycopg.errors.InvalidParameterValue, match='unknown provider "cohere"'
    ) as e:
        conn.execute("SELECT embeddings.register_model('c', 1024, provider => 'cohere')")
    assert "huggingface (" in (e.value.diag.message_hint or "")
    assert "openai (" in (e.value.diag.message_hint or "")


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        # (the name went into the default endpoint: "endpoint "<NULL>" is not an http(s) URL")
        ("register_model(NULL, 10)", psycopg.errors.NullValueNotAllowed, "name must not be NULL"),
        # (accepted: a model named '' then showed in every unknown-model hint)
        ("register_model('', 10)", psycopg.errors.InvalidParameterValue, "name must not be empty"),
        ("register_model(' ', 10)", psycopg.errors.InvalidParameterValue, "name must not be empty"),
        (
            "register_model('m', NULL)",
            psycopg.errors.NullValueNotAllowed,
            "dimensions must not be NULL",
        ),
    ],
)
def test_a_null_or_empty_name_is_refused_naming_the_argument(
    conn: Conn, call: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=rf"^embeddings\.register_model\(\): {message}"):
        conn.execute(f"SELECT embeddings.{call}")
    assert conn.execute(
        "SELECT count(*) FROM embeddings.models WHERE name IS NULL OR btrim(name) = '' OR name = 'm'"
    ).fetchone() == (0,)


def test_a_new_kind_changes_no_table_and_an_unknown_one_is_not_served(
    conn: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    """The table takes a kind this release does not know (a newer release's row): the worker
    does not serve it as another kind, and says why."""
    register_newer_kind(conn, dimensions=1024)
    conn.execute("SELECT embeddings.register_model('oa', 8, endpoint => 'https://x.test/v1')")
    with caplog.at_level(logging.ERROR):
        specs = load_remote_models(conn)
    assert set(specs) == {"oa"}
    assert "remote model newer is not served: unknown provider 'cohere'" in caplog.text
    with pytest.raises(exceptions.ConfigError, match="this worker knows huggingface, openai"):
        providers.of("cohere")
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling, provider)"
            " VALUES ('bad', 3, 512, 'mean', 'Not A Kind')"
        )


def test_each_kind_owns_its_request_and_url() -> None:
    base = {
        "name": "m",
        "dimensions": 3,
        "max_tokens": 512,
        "remote_model": "org/m",
        "credential": "x",
        "tokenizer": None,
    }
    openai = RemoteSpec.from_row({**base, "provider": "openai", "endpoint": "https://a.test/v1"})
    hf = RemoteSpec.from_row({**base, "provider": "huggingface", "endpoint": "https://h.test/m"})
    assert openai.url == "https://a.test/v1/embeddings" and hf.url == "https://h.test/m"
    assert providers.of("openai").request_body(openai, ["a"])["input"] == ["a"]
    assert providers.of("huggingface").request_body(hf, ["a"]) == {
        "inputs": ["a"],
        "truncate": True,
    }
    assert openai.max_inputs == 2048 and hf.max_inputs == 32  # the kind's default limits


def test_doctor_fails_a_model_of_an_unknown_kind(conn: Conn, dsn: str) -> None:
    register_newer_kind(conn)
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'newer')")
    result = run_cli("doctor", "--database-url", dsn)
    assert result.returncode != 0
    (line,) = [x for x in result.stdout.splitlines() if "model newer" in x]
    assert "FAIL" in line and "unknown provider 'cohere'" in line, result.stdout


def test_a_target_of_an_unknown_kind_waits_saying_why(
    conn: Conn, run_once: Callable[..., Worker]
) -> None:
    """Its rows wait (nothing dead-lettered, no request sent), and status says the kind is
    unknown, not that the model is missing."""
    register_newer_kind(conn)
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs VALUES (1, 'a'), (2, 'b')")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'newer')")
    run_once(max_attempts=1, expect=exits.UNSERVED)
    reason = deferred_reason(conn)
    assert "remote model newer is not served: unknown provider 'cohere'" in reason
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)
