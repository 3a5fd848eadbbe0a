"""The rerank stage (worker/retrieval/rerank.py, sql/57_rerank.sql) with a tiny random-weight
cross-encoder built in the test session and real all-MiniLM-L6-v2 vectors: the answer is the
first ranking's top `depth` reordered as the cross-encoder scores them (computed here by the
model directly), from the request or the table's setting, through the Python API, POST /search
and the command line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from tests.support.models import TINY_RERANKER, require_gte_tokenizer, tiny_reranker_dir
from tests.support.process import run_cli
from worker import exceptions
from worker.models.files import ModelLocation
from worker.models.loaded import LoadedModels
from worker.models.reranker import CrossEncoder, LoadedRerankers
from worker.retrieval import rerank, search
from worker.retrieval.errors import InvalidSearch
from worker.retrieval.request import SearchRequest

Conn = psycopg.Connection[Any]

RERANKER = TINY_RERANKER
QUESTION = "how long does a refund take"
BODIES = [
    "Refunds are paid within 14 days of the return.",
    "It takes 14 days.",
    "Our office is closed on public holidays.",
    "Returns are accepted for 30 days after delivery.",
    "Shipping is free above 50 euros.",
    "The refund goes back to the card you paid with.",
    "Gift cards cannot be refunded.",
    "Parcels arrive in two to three working days.",
    "Contact support by e-mail for a refund.",
    "A damaged item is replaced at no cost.",
    "Prices include VAT.",
    "We ship to every country of the European Union.",
]


@pytest.fixture(scope="session")
def reranker_path(generated_models_root: Path) -> str:
    """An EMBED_MODEL_PATH entry holding the tiny cross-encoder `tiny-rerank` (the one the
    integration session's generated models hold), or skip saying why."""
    return str(tiny_reranker_dir(generated_models_root, require_gte_tokenizer()).parent)


@pytest.fixture
def docs(conn: Conn, minilm: str, embedders: LoadedModels) -> None:
    """BODIES with their real vectors."""
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (minilm,))
    vectors = embedders.get(minilm).embed(BODIES)
    for i, (body, vector) in enumerate(zip(BODIES, vectors, strict=True), start=1):
        conn.execute("INSERT INTO docs VALUES (%s, %s)", (i, body))
        conn.execute(
            "UPDATE docs SET embedding = %s::vector WHERE id = %s", (str(vector.tolist()), i)
        )


def searched(conn: Conn, embedders: LoadedModels, path: str, **fields: Any) -> list[dict[str, Any]]:
    request = SearchRequest.parse({"table": "docs", "query": QUESTION, **fields})
    rerankers = LoadedRerankers(ModelLocation.of(path), threads=1)
    return search.run(conn, embedders.get, request, load_reranker=rerankers.get)


def expected(
    conn: Conn, embedders: LoadedModels, path: str, depth: int, k: int
) -> list[tuple[Any, float]]:
    """The first ranking's `depth` results, scored by the cross-encoder itself, best k."""
    first = searched(conn, embedders, path, k=depth, rerank=False)
    model = CrossEncoder.load(RERANKER, location=ModelLocation.of(path), threads=1)
    scores = model.score(QUESTION, [r["content"] for r in first])
    order = sorted(range(len(first)), key=lambda i: (-scores[i], i))[:k]
    return [(first[i]["key"], float(scores[i])) for i in order]


def assert_answer(results: list[dict[str, Any]], want: list[tuple[Any, float]]) -> None:
    assert [r["key"] for r in results] == [key for key, _ in want]
    np.testing.assert_allclose(
        [r["rerank_score"] for r in results], [s for _, s in want], rtol=1e-5
    )


def test_the_answer_is_the_first_ranking_reordered_by_the_scores(
    conn: Conn, docs: None, embedders: LoadedModels, reranker_path: str
) -> None:
    results = searched(conn, embedders, reranker_path, k=4, rerank=RERANKER, rerank_depth=10)

    want = expected(conn, embedders, reranker_path, depth=10, k=4)
    assert [r["key"] for r in results] == [key for key, _ in want]
    np.testing.assert_allclose([r["rerank_score"] for r in results], [s for _, s in want])
    first = [r["key"] for r in searched(conn, embedders, reranker_path, k=4, rerank=False)]
    assert [r["key"] for r in results] != first  # the stage changed the order here
    assert all(r["similarity"] is not None for r in results)  # the rest as the ranking gave it


def test_the_tables_reranker_is_the_default_and_false_turns_it_off(
    conn: Conn, docs: None, embedders: LoadedModels, reranker_path: str
) -> None:
    conn.execute("SELECT embeddings.set_rerank('docs', %s, depth => 8)", (RERANKER,))

    results = searched(conn, embedders, reranker_path, k=3)
    assert_answer(results, expected(conn, embedders, reranker_path, depth=8, k=3))
    assert all(
        r["rerank_score"] is None for r in searched(conn, embedders, reranker_path, rerank=False)
    )

    conn.execute("SELECT embeddings.set_rerank('docs', NULL)")
    assert all(r["rerank_score"] is None for r in searched(conn, embedders, reranker_path))


def test_the_default_depth_reads_three_results_per_answer_at_least_twenty(
    conn: Conn, docs: None, embedders: LoadedModels, reranker_path: str
) -> None:
    """k=2: 20 results read (all 12 rows here), so the best of all rows comes first."""
    results = searched(conn, embedders, reranker_path, k=2, rerank=RERANKER)
    assert_answer(results, expected(conn, embedders, reranker_path, depth=len(BODIES), k=2))


def test_a_reranker_that_is_not_there_is_unknown_and_named(
    conn: Conn, docs: None, embedders: LoadedModels, tmp_path: Path
) -> None:
    """A name the request gave that nothing answers to is the caller's mistake (a 400 over
    HTTP), said with what is registered, not the embedding models' catalog."""
    with pytest.raises(rerank.UnknownReranker, match="no reranker 'no-such-reranker'") as caught:
        searched(conn, embedders, str(tmp_path), rerank="no-such-reranker")
    assert "no reranker is registered" in str(caught.value)
    assert isinstance(caught.value, InvalidSearch)
    # A path is no name, even where the code is called without the request's check.
    rerankers = LoadedRerankers(ModelLocation.of(str(tmp_path)), threads=1)
    with pytest.raises(exceptions.ModelNotFound, match="a reranker is named"):
        rerankers.get(str(tmp_path / "x"))


def test_a_content_function_target_has_no_text_to_rerank(
    conn: Conn, minilm: str, embedders: LoadedModels, reranker_path: str
) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, title text, body text)")
    conn.execute(
        "CREATE FUNCTION doc_text(d docs) RETURNS text LANGUAGE sql STABLE"
        " AS $$ SELECT d.title || ' ' || d.body $$"
    )
    conn.execute("SELECT embeddings.watch('docs', 'doc_text', model => %s)", (minilm,))
    with pytest.raises(InvalidSearch, match="no text to rerank"):
        searched(conn, embedders, reranker_path, rerank=RERANKER)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("embeddings.set_rerank('docs', '../etc/x')", "is not a reranker's name"),
        ("embeddings.set_rerank('docs', 'a b')", "is not a reranker's name"),
        ("embeddings.set_rerank('docs', 'models/x')", "is not a reranker's name"),
        ("embeddings.set_rerank('docs', 'tiny-rerank', depth => 0)", "from 1 to 200"),
        ("embeddings.set_rerank('docs', NULL, depth => 5)", "needs a reranker"),
        ("embeddings.set_rerank('nowhere', 'tiny-rerank')", "does not exist"),
    ],
)
def test_set_rerank_refuses_what_it_cannot_keep(
    conn: Conn, docs: None, call: str, message: str
) -> None:
    with pytest.raises(psycopg.Error, match=message):
        conn.execute(f"SELECT {call}")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"rerank": True}, '"rerank" must be a reranker'),
        ({"rerank": ""}, '"rerank" must be a reranker'),
        ({"rerank": 3}, '"rerank" must be a reranker'),
        ({"rerank": "../../models/x"}, '"rerank" must be a reranker'),  # never a path
        ({"rerank": "/srv/models/x"}, '"rerank" must be a reranker'),
        ({"rerank": ".hidden"}, '"rerank" must be a reranker'),
        ({"rerank": "x", "rerank_depth": 0}, '"rerank_depth" must be an integer from 1 to 200'),
        ({"rerank": "x", "rerank_depth": True}, '"rerank_depth" must be an integer'),
        ({"rerank": False, "rerank_depth": 5}, 'no rerank stage with "rerank": false'),
    ],
)
def test_bad_rerank_fields_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SearchRequest.parse({"table": "docs", "query": "q", **fields})


def test_the_command_line_reranks(
    conn: Conn, dsn: str, docs: None, embedders: LoadedModels, reranker_path: str
) -> None:
    env = {"EMBED_MODEL_PATH": os.pathsep.join([os.environ["EMBED_MODEL_PATH"], reranker_path])}
    args = ("search", "docs", QUESTION, "-k", "3", "--database-url", dsn, "--json")
    result = run_cli(*args, "--rerank", RERANKER, "--rerank-depth", "10", env=env)
    assert result.returncode == 0, result.stderr
    assert_answer(json.loads(result.stdout), expected(conn, embedders, reranker_path, 10, 3))

    table = run_cli(*args[:-1], "--rerank", RERANKER, env=env)
    assert table.returncode == 0, table.stderr
    assert table.stdout.split()[0] == "rerank"  # the score the rows are in the order of

    refused = run_cli(*args, "--no-rerank", "--rerank-depth", "5", env=env)
    assert refused.returncode != 0
    assert "--rerank-depth: there is no rerank stage with --no-rerank" in refused.stderr


def test_a_tables_reranker_that_is_not_there_is_said_with_the_rerankers_and_how_to_get_one(
    conn: Conn, docs: None, embedders: LoadedModels, tmp_path: Path
) -> None:
    """set_rerank() cannot know the cross-encoder directories of the workers, so it takes any
    name; a search then said "Known models: gte-small, ...; download one with `embed-worker
    model download NAME`", which fetches no reranker. It names the registered rerankers and the
    two ways to get one."""
    conn.execute("SELECT embeddings.register_reranker('cohere-rr', 'cohere')")
    conn.execute("SELECT embeddings.set_rerank('docs', 'no-such-reranker')")
    with pytest.raises(rerank.RerankerUnavailable) as caught:
        searched(conn, embedders, str(tmp_path), k=3)
    said = str(caught.value)
    assert said.startswith("reranker no-such-reranker (the table's, set by set_rerank()): ")
    assert f"no cross-encoder directory no-such-reranker/ (looked in {tmp_path}" in said
    assert "registered rerankers: cohere-rr" in said
    assert "embeddings.register_reranker()" in said and "model.onnx, tokenizer.json" in said
    assert "Known models" not in said and "model download" not in said
