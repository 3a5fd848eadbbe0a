"""Retrieval through chunks: facts placed after the model's token limit in long documents of
real text are found through a chunked target, and not through a plain (truncating) one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from bench import corpus
from tests.support.models import shared_models_dir
from worker.models.loaded import LoadedModels
from worker.models.onnx import load_tokenizer
from worker.process.runner import Worker
from worker.retrieval import search
from worker.retrieval.request import SearchRequest

Conn = psycopg.Connection[Any]

# (fact, question): each fact is about something the filler (Python docstrings) never mentions.
FACTS = [
    (
        "Marguerite's violin workshop in Tromsø glues the maple backs with sturgeon isinglass.",
        "What glue does the violin maker in Tromsø use?",
    ),
    (
        "The Kestrel Ridge observatory counted 412 meteors per hour during the February shower.",
        "How many meteors per hour did the observatory see?",
    ),
    (
        "Grandmother Ilse's plum dumplings need exactly seven cloves and a spoon of poppy seeds.",
        "How many cloves go into grandmother's plum dumplings?",
    ),
    (
        "The old ferry to Hamningberg was replaced by a hovercraft painted bright orange.",
        "What replaced the ferry to Hamningberg?",
    ),
    (
        "Beekeepers in the Atlas foothills move their hives by mule before the thyme flowers.",
        "How do the mountain beekeepers carry their beehives?",
    ),
    (
        "A chess club in Valparaíso banned the Sicilian Defence for a season after a quarrel.",
        "Which chess opening was banned by the club in Chile?",
    ),
    (
        "The tallest sunflower at the county fair reached five metres, grown on coffee grounds.",
        "How tall was the record sunflower at the fair?",
    ),
    (
        "Cable repair ships lower grapnels to hook a broken submarine cable off the seabed.",
        "How do ships recover a broken undersea cable?",
    ),
]


def long_documents(tokens_before_fact: int) -> list[str]:
    """One document per fact: stdlib docstrings until `tokens_before_fact` tokens, then the fact."""
    tokenizer = load_tokenizer(
        shared_models_dir() / "all-MiniLM-L6-v2" / "tokenizer.json", max_tokens=None
    )
    fillers = iter(t for t in corpus.load(2000, seed=7) if len(t) > 400)
    documents = []
    for fact, _ in FACTS:
        parts: list[str] = []
        while (
            len(tokenizer.encode("\n\n".join(parts), add_special_tokens=False).ids)
            < tokens_before_fact
        ):
            parts.append(next(fillers))
        documents.append("\n\n".join([*parts, fact]))
    return documents


@pytest.fixture
def library(conn: Conn, minilm: str) -> list[str]:
    documents = long_documents(tokens_before_fact=600)  # MiniLM reads 256
    for table in ("chunked", "plain"):
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, body text)")
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {table} VALUES (%s, %s)", list(enumerate(documents, start=1))
            )
    conn.execute(
        "SELECT embeddings.watch('chunked', 'body', model => %s, chunk_tokens => 128,"
        " chunk_overlap => 16)",
        (minilm,),
    )
    conn.execute("SELECT embeddings.watch('plain', 'body', model => %s)", (minilm,))
    return documents


def test_facts_past_the_token_limit_are_found_through_chunks_only(
    conn: Conn,
    library: list[str],
    run_once: Callable[..., Worker],
    embedders: LoadedModels,
    dsn: str,
) -> None:
    run_once()
    found_chunked = found_plain = 0
    with psycopg.connect(dsn, autocommit=True) as search_conn:
        for expected, (fact, question) in enumerate(FACTS, start=1):
            (best,) = search.run(search_conn, embedders.get, SearchRequest("chunked", question, 1))
            if best["key"] == expected:
                found_chunked += 1
                assert fact in best["content"]  # the matching chunk is the one with the fact
            ranked = search.run(search_conn, embedders.get, SearchRequest("plain", question, 8))
            found_plain += ranked[0]["key"] == expected
            # What the plain target knows of the right document is far from the question.
            plain = next(r["similarity"] for r in ranked if r["key"] == expected)
            assert best["similarity"] > plain + 0.15, (question, best["similarity"], plain)
    assert found_chunked == len(FACTS)
    # The truncated vectors never saw the facts: at most chance matches (1 in 8 each).
    assert found_plain <= len(FACTS) // 2, found_plain
