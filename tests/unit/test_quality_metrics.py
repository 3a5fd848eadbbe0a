"""The retrieval-quality metrics of bench/quality (recall@k, nDCG@k) on small rankings whose
scores are worked out by hand, including the edge cases that skew means when wrong."""

from __future__ import annotations

import math

import pytest

from bench.quality.metrics import dcg, mean, ndcg_at_k, recall_at_k


def test_recall_counts_relevant_items_in_the_first_k() -> None:
    qrels = {"a": 1, "b": 1, "c": 1, "d": 1}
    assert recall_at_k(["a", "x", "b", "y", "c"], qrels, 3) == 2 / 4
    assert recall_at_k(["a", "x", "b", "y", "c"], qrels, 5) == 3 / 4
    assert recall_at_k(["x", "y"], qrels, 10) == 0.0


def test_recall_ignores_grades_and_zero_judgements() -> None:
    assert recall_at_k(["b"], {"a": 2, "b": 1, "z": 0}, 10) == 1 / 2
    assert recall_at_k(["z"], {"a": 2, "z": 0}, 10) == 0.0


def test_a_repeated_item_counts_once_and_does_not_take_a_place() -> None:
    qrels = {"a": 1, "b": 1}
    # "a" twice: the second is skipped, so "b" is still within the first 2 distinct items.
    assert recall_at_k(["a", "a", "b"], qrels, 2) == 1.0
    assert ndcg_at_k(["a", "a", "b"], qrels, 2) == pytest.approx(1.0)


def test_ndcg_of_a_perfect_ranking_is_one() -> None:
    qrels = {"a": 2, "b": 1}
    assert ndcg_at_k(["a", "b", "x"], qrels, 10) == pytest.approx(1.0)


def test_ndcg_by_hand() -> None:
    # One relevant item at place 3: DCG = 1 / log2(4) = 0.5; IDCG = 1 / log2(2) = 1.
    assert ndcg_at_k(["x", "y", "a"], {"a": 1}, 10) == pytest.approx(0.5)
    # Grades 2 and 1, ranked b (1) first then a (2):
    # DCG = 1/log2(2) + 2/log2(3); IDCG = 2/log2(2) + 1/log2(3).
    expected = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert ndcg_at_k(["b", "a"], {"a": 2, "b": 1}, 10) == pytest.approx(expected)
    assert expected == pytest.approx(0.8597, abs=1e-4)


def test_ndcg_cuts_both_the_ranking_and_the_ideal_at_k() -> None:
    qrels = {"a": 1, "b": 1, "c": 1}
    # k = 1: the ideal holds one relevant item, so one found at place 1 is perfect.
    assert ndcg_at_k(["a", "b"], qrels, 1) == pytest.approx(1.0)
    # The relevant item at place 2 lies beyond k = 1.
    assert ndcg_at_k(["x", "a"], qrels, 1) == 0.0


def test_an_empty_ranking_scores_zero() -> None:
    assert recall_at_k([], {"a": 1}, 10) == 0.0
    assert ndcg_at_k([], {"a": 1}, 10) == 0.0


def test_a_query_without_relevant_items_is_refused() -> None:
    with pytest.raises(ValueError, match="no relevant item"):
        recall_at_k(["a"], {}, 10)
    with pytest.raises(ValueError, match="no relevant item"):
        ndcg_at_k(["a"], {"a": 0}, 10)
    with pytest.raises(ValueError, match="k must be positive"):
        recall_at_k(["a"], {"a": 1}, 0)


def test_dcg_and_mean() -> None:
    assert dcg([3, 2]) == pytest.approx(3 + 2 / math.log2(3))
    assert dcg([]) == 0.0
    assert mean([0.0, 1.0, 0.5]) == 0.5
    with pytest.raises(ValueError):
        mean([])
