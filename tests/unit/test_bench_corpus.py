"""The benchmarks' corpus of real prose (bench/corpus.py), without a database."""

from __future__ import annotations

from bench import corpus


def test_rows_are_as_many_as_asked_and_distinct_past_the_docstrings() -> None:
    docstrings = len(corpus.stdlib_docstrings())
    asked = docstrings * 2 + 7  # a backlog larger than the docstrings there are
    texts = corpus.rows(asked, seed=3)
    assert len(texts) == asked
    assert len(set(texts)) == asked


def test_rows_with_a_seed_are_the_same_each_time_and_differ_from_another_seed() -> None:
    assert corpus.rows(50, seed=3) == corpus.rows(50, seed=3)
    assert corpus.rows(50, seed=3) != corpus.rows(50, seed=4)
