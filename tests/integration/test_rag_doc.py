"""docs/rag.md as written (issue 37): its table, its documents and its question, searched as its
`POST /search` example searches, show hybrid search doing something: the document holding every
word of the question has a text rank and comes first."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from worker.process.runner import Worker
from worker.retrieval import search
from worker.retrieval.request import SearchRequest

RAG = Path(__file__).resolve().parents[2] / "docs" / "rag.md"


def sql_blocks(text: str) -> list[str]:
    return re.findall(r"```sql\n(.*?)```", text, re.S)


def test_the_rag_example_reaches_both_rankings(
    conn: psycopg.Connection[Any], minilm: str, run_once: Callable[..., Worker], embedders: Any
) -> None:
    text = RAG.read_text()
    create, documents = sql_blocks(text)[:2]
    conn.execute("SELECT embeddings.set_default_model(%s)", (minilm,))  # the offline model
    conn.execute(create.encode())
    conn.execute(documents.encode())
    run_once()
    example = re.search(r"curl -s localhost:8080/search .*?-d '(\{.*?\})'", text, re.S)
    assert example, "rag.md shows a POST /search"
    body = json.loads(example.group(1))

    results = search.run(conn, embedders.get, SearchRequest.parse(body))

    assert results[0]["key"] == 1, results
    assert results[0]["text_rank"] == 1, results  # the full-text side found it
    assert all(r["vector_rank"] is not None for r in results)
