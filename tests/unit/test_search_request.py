"""POST /search's body and hybrid search's tuning, checked before anything runs
(worker/retrieval/request.py, worker/retrieval/fusion.py)."""

from __future__ import annotations

from typing import Any

import pytest

from worker.retrieval.fusion import Fusion
from worker.retrieval.request import SearchRequest

BASE = {"table": "docs", "query": "where is the door"}


def test_without_tuning_hybrid_search_keeps_its_defaults() -> None:
    assert SearchRequest.parse({**BASE, "mode": "hybrid"}).fusion is None
    assert Fusion() == Fusion(
        rrf_k=None, vector_weight=1, text_weight=None, depth=100, text_match="any", fusion="convex"
    )
    assert Fusion().rank_constant == 60  # hybrid_search()'s default, sent as rrf_k


def test_tuning_is_read_from_the_body() -> None:
    request = SearchRequest.parse(
        {**BASE, "rrf_k": 10, "vector_weight": 0.5, "text_weight": 2, "depth": 40, "fusion": "rrf"}
    )
    assert request.fusion == Fusion(
        rrf_k=10.0, vector_weight=0.5, text_weight=2.0, depth=40, fusion="rrf"
    )
    assert request.mode == "auto"
    # One field alone: the others keep their defaults; 0 is a weight (that ranking ignored).
    only = SearchRequest.parse({**BASE, "mode": "hybrid", "text_weight": 0})
    assert only.fusion == Fusion(text_weight=0.0)


def test_text_match_and_fusion_are_read_from_the_body_with_the_other_defaults() -> None:
    """Every word, or reciprocal rank fusion: the other fields keep their defaults, and
    text_weight stays unset, so that hybrid_search() picks the one of the fusion asked for
    (0.2 convex, 2 rrf: sql/59_hybrid.sql)."""
    request = SearchRequest.parse({**BASE, "text_match": "all"})
    assert request.fusion == Fusion(text_match="all")
    assert request.fusion.text_weight is None and request.fusion.vector_weight == 1.0
    assert SearchRequest.parse({**BASE, "text_match": "any"}).fusion == Fusion()
    rrf = SearchRequest.parse({**BASE, "fusion": "rrf", "text_match": "all"}).fusion
    assert rrf == Fusion(fusion="rrf", text_match="all")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"text_match": "some"}, '"text_match" must be "all" or "any"'),
        ({"text_match": 1}, '"text_match" must be "all" or "any"'),
        ({"fusion": "linear"}, '"fusion" must be "convex" or "rrf"'),
        ({"mode": "vector", "fusion": "rrf"}, "fusion: these tune hybrid search"),
        ({"mode": "vector", "text_match": "any"}, "text_match: these tune hybrid search"),
        ({"rrf_k": -1}, "rrf_k must be a number of at least 0"),
        ({"rrf_k": "60"}, '"rrf_k" must be a number'),
        ({"rrf_k": True}, '"rrf_k" must be a number'),
        ({"vector_weight": -0.5}, "vector_weight must be a number of at least 0"),
        ({"text_weight": [1]}, '"text_weight" must be a number'),
        ({"vector_weight": 0, "text_weight": 0}, "cannot both be 0"),
        ({"depth": 0}, '"depth" must be an integer from 1 to 1000'),
        ({"depth": 1001}, '"depth" must be an integer from 1 to 1000'),
        ({"depth": 10.5}, '"depth" must be an integer'),
        ({"depth": False}, '"depth" must be an integer'),
        ({"rrf_k": float("inf")}, "rrf_k must be a number of at least 0"),
        ({"text_weight": 10**400}, '"text_weight" is out of range'),
        ({"vector_weight": 1.7e308}, "vector_weight must be a number of at least 0: 0 or"),
        ({"text_weight": 5e-324}, "text_weight must be a number of at least 0: 0 or"),
        ({"rrf_k": 1e7}, "rrf_k must be a number of at least 0: 0 or from 1e-06 to 1e"),
        ({"mode": "vector", "depth": 5}, 'depth: these tune hybrid search, not "mode": "vector"'),
        # The convex fusion (the default) has no rank constant: it would be ignored.
        ({"rrf_k": 10}, "rrf_k is for fusion 'rrf': the convex one has no rank constant"),
        ({"rrf_k": 60, "fusion": "convex"}, "rrf_k is for fusion 'rrf'"),
    ],
)
def test_bad_tuning_is_refused_naming_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        SearchRequest.parse({**BASE, **fields})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-k", "0"], "-k must be an integer from 1 to 100"),
        (["--filter", "[1]"], "--filter must be a JSON object of column names"),
        (
            ["--mode", "vector", "--rrf-k", "5"],
            "--rrf-k: these tune hybrid search, not --mode vector",
        ),
        (["--depth", "0"], "--depth must be an integer from 1 to 1000"),
        (["--mode", "vector", "--text-match", "any"], "--text-match: these tune hybrid search"),
        (["--rrf-k", "5"], "--rrf-k is for --fusion 'rrf': the convex one has no rank constant"),
    ],
)
def test_the_command_line_checks_a_search_as_http_does_naming_its_flags(
    argv: list[str], message: str
) -> None:
    """`embed-worker search` builds the SearchRequest POST /search builds: one check, its
    complaints naming the flags."""
    from worker import exceptions
    from worker.cli import embedding, parser

    args = parser.build_parser().parse_args(["search", "docs", "cats", *argv])
    with pytest.raises(exceptions.ConfigError) as refused:
        embedding._search_request(args)
    assert str(refused.value).startswith(message)


def test_the_command_line_passes_text_match_and_keeps_the_other_defaults() -> None:
    """`--text-match any` is POST /search's "text_match": "any"; no tuning flag at all leaves
    the fusion to hybrid_search()'s defaults."""
    from worker.cli import embedding
    from worker.cli.parser import build_parser

    parser = build_parser()
    args = parser.parse_args(["search", "docs", "cats", "--text-match", "any"])
    assert embedding._search_request(args).fusion == Fusion(text_match="any")
    args = parser.parse_args(["search", "docs", "cats", "--fusion", "rrf", "--text-match", "all"])
    assert embedding._search_request(args).fusion == Fusion(fusion="rrf", text_match="all")
    untuned = parser.parse_args(["search", "docs", "cats"])
    assert embedding._search_request(untuned).fusion is None
    with pytest.raises(SystemExit):  # argparse: one of all, any
        parser.parse_args(["search", "docs", "cats", "--text-match", "some"])


@pytest.mark.parametrize("body", [None, {}, [], {"k": 3}, {"table": "", "query": ""}])
def test_a_body_without_either_field_names_both(body: Any) -> None:
    with pytest.raises(ValueError, match=r'"table" .*"query"'):
        SearchRequest.parse(body)


def test_a_body_missing_one_field_names_that_one() -> None:
    with pytest.raises(ValueError, match='"query"'):
        SearchRequest.parse({"table": "docs"})
    with pytest.raises(ValueError, match='"table"'):
        SearchRequest.parse({"query": "where"})


@pytest.mark.parametrize(
    ("field", "meant"),
    [
        ("embedding_column", "column"),  # the SQL functions' name
        ("top_k", "k"),
        ("rerank_dept", "rerank_depth"),  # a typo
        ("textmatch", "text_match"),
        ("colour", None),
    ],
)
def test_a_field_a_search_does_not_take_is_refused_with_the_one_meant(
    field: str, meant: str | None
) -> None:
    """Ignored, `{"embedding_column": "vec"}` searched the table's only column and `top_k`
    returned 5 results: an answer to another question."""
    with pytest.raises(ValueError) as info:
        SearchRequest.parse({**BASE, field: 3})
    said = str(info.value)
    assert said.startswith(f"unknown field {field!r}")
    assert (f"did you mean {meant!r}?" in said) == (meant is not None), said
    assert "a search takes table, query, k, column, filter, mode" in said


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"query": "pass\x00word"}, '"query" must not contain a NUL'),
        ({"filter": {"lang": "e\x00n"}}, '"filter" must not contain a NUL'),
        ({"filter": {"la\x00ng": "en"}}, '"filter" must not contain a NUL'),
        ({"filter": {"lang": {"in": ["en", "f\x00r"]}}}, '"filter" must not contain a NUL'),
    ],
)
def test_a_nul_in_the_question_or_the_filter_is_the_caller_s_mistake(
    fields: dict[str, Any], message: str
) -> None:
    """Postgres text cannot hold a NUL: the server failed the search with a 500 (psycopg's
    error for the question, the jsonb cast's for the filter). Refused by whichever entry point
    made the request, the Python one included."""
    with pytest.raises(ValueError, match=message):
        SearchRequest.parse({**BASE, **fields})
    with pytest.raises(ValueError, match=message):
        SearchRequest("docs", fields.get("query", "x"), filter=fields.get("filter"))
