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


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        # (each was the table's bare check violation, e.g. models_dimensions_check, or for
        # pooling a NOT NULL one; a local model's endpoint was accepted and dropped)
        ("'m', 0", "dimensions is from 1 to 4000, not 0"),
        ("'m', -3", "dimensions is from 1 to 4000, not -3"),
        ("'m', 4001", "dimensions is from 1 to 4000, not 4001"),
        ("'m', 8, max_tokens => 0", "max_tokens is 1 or more, not 0"),
        ("'m', 8, 'local', max_tokens => -1", "max_tokens is 1 or more, not -1"),
        ("'m', 8, max_inputs => 0", "max_inputs is 1 or more, not 0"),
        ("'m', 8, max_request_tokens => -1", "max_request_tokens is 1 or more, not -1"),
        ("'m', 8, max_in_flight => 0", "max_in_flight is from 1 to 64, not 0"),
        ("'m', 8, max_in_flight => 65", "max_in_flight is from 1 to 64, not 65"),
        ("'m', 8, timeout_seconds => 0", "timeout_seconds is more than 0 and at most 600, not 0"),
        ("'m', 8, timeout_seconds => -1", "timeout_seconds is more than 0 and at most 600, not -1"),
        (  # (the table took these: the worker would wait for ever)
            "'m', 8, timeout_seconds => 'Infinity'",
            "timeout_seconds is more than 0 and at most 600, not Infinity",
        ),
        (
            "'m', 8, timeout_seconds => 'NaN'",
            "timeout_seconds is more than 0 and at most 600, not NaN",
        ),
        (
            "'m', 8, timeout_seconds => 601",
            "timeout_seconds is more than 0 and at most 600, not 601",
        ),
        (
            "'m', 8, price_per_million_tokens => -0.5",
            "price_per_million_tokens is 0 or more, not -0.5",
        ),
        (
            "'m', 8, price_per_million_tokens => 'NaN'",
            "price_per_million_tokens is 0 or more, not NaN",
        ),
        ("'m', 8, credential => 'sk abc'", "credential 'sk abc' is not a key's name"),
        ("'m', 8, pooling => 'max'", "pooling is 'mean' or 'cls', not 'max'"),
        ("'m', 8, 'local', 'https://x.test/v1'", "a local model takes no endpoint"),
        ("'m', 8, 'local', remote_model => 'r'", "a local model takes no remote_model"),
        ("'m', 8, 'local', max_in_flight => 2", "a local model takes no max_in_flight"),
        ("'m', 8, 'local', credential => ''", "a local model takes no credential"),
        ("'m', 8, 'local', send_dimensions => true", "a local model takes no send_dimensions"),
    ],
)
def test_register_model_refuses_an_argument_out_of_range_naming_it(
    conn: Conn, arguments: str, message: str
) -> None:
    """Each refusal names the argument, its value and what it may be, before anything is
    written: here over a registered model of that name, which stays as it was."""
    conn.execute("SELECT embeddings.register_model('m', 8, endpoint => 'https://x.test/v1')")
    before = conn.execute("SELECT m FROM embeddings.models m WHERE name = 'm'").fetchone()
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        conn.execute(f"SELECT embeddings.register_model({arguments})")
    said = str(e.value.diag.message_primary)
    assert said.partition(": it is")[0] == f"embeddings.register_model(): {message}", said
    after = conn.execute("SELECT m FROM embeddings.models m WHERE name = 'm'").fetchone()
    assert after == before


def test_register_model_takes_the_ends_of_each_range(conn: Conn) -> None:
    conn.execute(
        "SELECT embeddings.register_model('m', 4000, endpoint => 'https://x.test/v1',"
        " max_tokens => 1, max_inputs => 1, max_request_tokens => 1, max_in_flight => 64,"
        " timeout_seconds => 600, price_per_million_tokens => 0, pooling => 'cls')"
    )
    conn.execute("SELECT embeddings.register_model('l', 1, 'local', max_tokens => 1)")
    assert conn.execute(
        "SELECT count(*) FROM embeddings.models WHERE name IN ('m', 'l')"
    ).fetchone() == (2,)


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
