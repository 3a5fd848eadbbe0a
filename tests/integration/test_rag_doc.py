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

from tests.support.documents import pdf_bytes
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


HELP_CENTRE = """# Help centre

Answers to the questions customers ask most.

## Refunds

It takes 14 days.

## Shipping

Parcels leave the warehouse within two working days.
"""


def test_the_files_example_cites_heading_paths_and_pages(
    conn: psycopg.Connection[Any], minilm: str, run_once: Callable[..., Worker], embedders: Any
) -> None:
    """rag.md's files: its table, its insert, its search and its citations, with a PDF and a
    Markdown file made here."""
    text = RAG.read_text()
    conn.execute("SELECT embeddings.set_default_model(%s)", (minilm,))
    conn.execute(sql_blocks(text)[2].encode())
    insert = re.search(r'"(INSERT INTO files [^"]*)"', text)
    assert insert, "rag.md inserts files"
    manual = pdf_bytes(
        [
            ["Heater manual", *(f"Step {n}: unpack it and plug it in." for n in range(12))],
            ["Maintenance", *(f"Clean filter {n} with warm water monthly." for n in range(12))],
        ],
        title="Heater manual",
    )
    for name, body in (("heater-manual.pdf", manual), ("help-centre.md", HELP_CENTRE.encode())):
        conn.execute(insert.group(1).encode(), (7, name, body))
    run_once()
    example = re.search(r"-d '(\{\"table\": \"files\".*?\})'", text, re.S)
    assert example, "rag.md searches files"

    results = search.run(conn, embedders.get, SearchRequest.parse(json.loads(example.group(1))))

    assert results[0]["content"] == "It takes 14 days.", results
    assert (results[0]["key"], results[0]["headings"]) == (2, ["Help centre", "Refunds"])
    assert results[1]["key"] == 1 and results[1]["page"] in (1, 2), results
    found = re.search(r"(def cite\(hit\):.*?\n    return .*?\n)", text, re.S)
    assert found, "rag.md cites passages"
    namespace: dict[str, Any] = {}
    exec(found.group(1), namespace)
    assert namespace["cite"](results[0]) == "2, Help centre > Refunds"
    assert namespace["cite"](results[1]) == f"1, p. {results[1]['page']}"
    assert namespace["cite"]({"key": 5, "content": "a row"}) == "5"
