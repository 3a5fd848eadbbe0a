"""`embed-worker search` and `embed --model` on a table whose model is remote (issue 37): the
query is embedded with the table's model, whatever its kind, exactly as POST /search and
POST /embed do, against a stand-in OpenAI-compatible provider."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.support.process import cli_json
from tests.support.provider_server import ProviderServer, fake_vector

Conn = psycopg.Connection[Any]
DIMS = 8


@pytest.fixture
def provider() -> Iterator[ProviderServer]:
    with ProviderServer(kind="openai", dims=DIMS) as server:
        yield server


@pytest.fixture
def remote_docs(dsn: str, provider: ProviderServer) -> None:
    """docs on the remote model minilm-remote, each row's vector the provider's for its body."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT embeddings.register_model('minilm-remote', %s, 'openai', %s, 'test-model',"
            " credential => '')",
            (DIMS, provider.base_url),
        )
        conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
        conn.execute("SELECT embeddings.watch('docs', 'body', model => 'minilm-remote')")
        for i in range(1, 6):
            body = f"document number {i}"
            conn.execute(
                "INSERT INTO docs (id, body, embedding) VALUES (%s, %s, %s::halfvec)",
                (i, body, str(fake_vector(body, DIMS))),
            )


@pytest.mark.usefixtures("remote_docs")
def test_search_embeds_the_query_with_the_tables_remote_model(
    dsn: str, provider: ProviderServer
) -> None:
    results = cli_json("search", "docs", "document number 3", "--json", "--database-url", dsn)

    assert results[0]["key"] == 3
    assert results[0]["similarity"] == pytest.approx(1.0, abs=1e-2)
    assert any(r.get("inputs") == ["document number 3"] for r in provider.requests), (
        "the query went to the provider"
    )


@pytest.mark.usefixtures("remote_docs")
def test_embed_names_a_remote_model_registered_in_the_database(dsn: str) -> None:
    [vector] = cli_json("embed", "--model", "minilm-remote", "hello there", "--database-url", dsn)

    assert vector == pytest.approx(fake_vector("hello there", DIMS), abs=1e-6)
