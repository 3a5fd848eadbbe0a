"""The remote rerankers' registry (sql/57_rerank.sql): one class per kind on the worker's side
(worker/models/remote/rerank_providers.py), whose defaults are embeddings.reranker_defaults()'s;
register_reranker() fills a row in from them and refuses what the worker could not keep
(an unknown kind, a key in the URL or over plain http, a bad name or limit);
unregister_reranker() refuses while a target's rerank stage names the reranker."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.support.defaults import assert_sql_defaults_are_the_classes
from worker.models.remote import rerank_providers

Conn = psycopg.Connection[Any]


def test_the_sql_defaults_are_the_classes(conn: Conn) -> None:
    assert_sql_defaults_are_the_classes(
        conn,
        "reranker_defaults",
        {
            "provider": "name",
            "endpoint": "default_endpoint",
            "max_documents": "max_documents",
            "max_tokens": "max_tokens",
            "credential": "default_credential",
            "sends_model": "sends_model",
        },
        rerank_providers.KINDS.values(),
    )


def registered(conn: Conn, name: str) -> tuple[Any, ...] | None:
    return conn.execute(
        "SELECT provider, endpoint, remote_model, max_documents, max_tokens, max_in_flight,"
        " timeout_seconds, credential FROM embeddings.rerankers WHERE name = %s",
        (name,),
    ).fetchone()


def test_register_reranker_fills_in_the_kinds_defaults(conn: Conn) -> None:
    assert conn.execute("SELECT embeddings.register_reranker('co', 'cohere')").fetchone() == ("co",)
    assert registered(conn, "co") == (
        "cohere",
        "https://api.cohere.com/v2",
        "co",
        1000,
        4096,
        4,
        30.0,
        "cohere",
    )
    conn.execute(
        "SELECT embeddings.register_reranker('bge', 'tei', 'http://10.0.0.7:8080/',"
        " max_in_flight => 8, description => 'bge-reranker-base on the GPU box')"
    )
    assert registered(conn, "bge") == (
        "tei",
        "http://10.0.0.7:8080",  # no key: plain http to anywhere
        None,
        32,
        512,
        8,
        30.0,
        None,
    )
    # Registered again: updated, the description kept when none is given.
    conn.execute(
        "SELECT embeddings.register_reranker('bge', 'tei', 'https://tei.internal',"
        " credential => 'tei-key', max_documents => 64)"
    )
    assert registered(conn, "bge") == (
        "tei",
        "https://tei.internal",
        None,
        64,
        512,
        4,
        30.0,
        "tei-key",
    )
    row = conn.execute(
        "SELECT description, updated_at > created_at FROM embeddings.rerankers WHERE name = 'bge'"
    ).fetchone()
    assert row is not None and row[0] == "bge-reranker-base on the GPU box"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("'x', 'rerankly'", 'unknown rerank provider "rerankly"'),
        ("'../x', 'cohere'", "is not a reranker's name"),
        ("'a b', 'cohere'", "is not a reranker's name"),
        ("'x', 'tei'", "a tei reranker needs its endpoint"),
        (
            "'x', 'tei', 'http://127.0.0.1:8080', 'BAAI/bge-reranker-base'",
            "tei takes no remote_model",
        ),
        ("'x', 'cohere', 'ftp://api.cohere.com'", "is not an http\\(s\\) URL"),
        ("'x', 'cohere', 'https://user:secret@api.cohere.com/v2'", "carries a credential"),
        ("'x', 'jina', 'https://api.jina.ai/v1?api_key=abc'", "carries a credential"),
        ("'x', 'cohere', 'http://api.cohere.com/v2'", "over plain http"),
        ("'x', 'cohere', 'http://127.0.0.1.nip.io/v2'", "over plain http"),
        ("'x', 'tei', 'http://10.0.0.7:8080', credential => 'k'", "over plain http"),
        ("'x', 'cohere', max_documents => 0", "max_documents is from 1 to 10000"),
        ("'x', 'cohere', max_in_flight => 65", "max_in_flight is from 1 to 64"),
        ("'x', 'cohere', timeout_seconds => 0", "timeout_seconds is more than 0"),
        (
            "'x', 'cohere', timeout_seconds => 'Infinity'",
            "^embeddings.register_reranker\\(\\): timeout_seconds is more than 0 and at most 600, not Infinity\n",
        ),
        ("'x', 'cohere', max_tokens => -1", "max_tokens is from 1 to 1000000"),
        ("'x', 'cohere', credential => 'sk abc'", "is not a key's name"),
    ],
)
def test_register_reranker_refuses_what_the_worker_could_not_keep(
    conn: Conn, call: str, message: str
) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
        conn.execute(f"SELECT embeddings.register_reranker({call})")
    assert conn.execute("SELECT count(*) FROM embeddings.rerankers").fetchone() == (0,)


def test_an_unknown_kind_is_refused_naming_the_known_ones(conn: Conn) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        conn.execute("SELECT embeddings.register_reranker('x', 'rerankly')")
    hint = e.value.diag.message_hint or ""
    for kind in rerank_providers.KINDS:
        assert f"{kind} (" in hint, hint


@pytest.mark.parametrize(
    "endpoint", ["http://127.0.0.1:9/v2", "http://localhost:9/v2", "http://[::1]:9/v2"]
)
def test_a_key_may_go_over_plain_http_to_loopback(conn: Conn, endpoint: str) -> None:
    conn.execute("SELECT embeddings.register_reranker('x', 'cohere', %s)", (endpoint,))
    assert registered(conn, "x") is not None


def test_register_model_refuses_the_same_endpoints_through_the_same_check(conn: Conn) -> None:
    for endpoint, message in (
        ("http://api.example.com/v1", "over plain http"),
        ("https://u:p@api.example.com/v1", "carries a credential"),
    ):
        with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
            conn.execute("SELECT embeddings.register_model('m', 8, endpoint => %s)", (endpoint,))


def test_unregister_is_refused_while_a_table_reranks_with_it(conn: Conn) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('docs', 'body')")
    conn.execute("SELECT embeddings.register_reranker('co', 'cohere')")
    conn.execute("SELECT embeddings.set_rerank('docs', 'co')")
    with pytest.raises(psycopg.errors.ObjectInUse, match="reranker co is the rerank stage of") as e:
        conn.execute("SELECT embeddings.unregister_reranker('co')")
    assert "set_rerank" in (e.value.diag.message_hint or "")
    conn.execute("SELECT embeddings.set_rerank('docs', NULL)")
    assert conn.execute("SELECT embeddings.unregister_reranker('co')").fetchone() == (True,)
    assert conn.execute("SELECT embeddings.unregister_reranker('co')").fetchone() == (False,)
    assert registered(conn, "co") is None


def test_a_row_by_hand_is_checked_by_the_table(conn: Conn) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO embeddings.rerankers (name, provider, endpoint, max_documents,"
            " max_tokens, max_in_flight, timeout_seconds) VALUES ('../x', 'cohere', 'https://x',"
            " 1, 1, 1, 1)"
        )
