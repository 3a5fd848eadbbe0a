"""Ranking metrics over graded relevance judgements, as trec_eval (and BEIR through
pytrec_eval) define them.

`qrels` maps an item to its grade (> 0 relevant; items absent or graded 0 are not). A ranking
is a list of items, best first; an item listed twice counts once, at its first place.

- recall@k: the share of the relevant items that appear in the first k places.
- nDCG@k: DCG@k / IDCG@k with linear gains, DCG@k = sum over the first k places i (from 1) of
  grade(item_i) / log2(i + 1), and IDCG@k the DCG@k of the relevant items in descending grade.

A query with no relevant item has no defined score: both raise ValueError rather than return
0 or 1 (either would bias the mean).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import TypeVar

Item = TypeVar("Item", bound=Hashable)


def _first_k(ranking: Sequence[Item], k: int) -> list[Item]:
    if k < 1:
        raise ValueError(f"k must be positive, not {k}")
    seen: set[Item] = set()
    kept: list[Item] = []
    for item in ranking:
        if item not in seen:
            seen.add(item)
            kept.append(item)
            if len(kept) == k:
                break
    return kept


def _relevant(qrels: Mapping[Item, float]) -> dict[Item, float]:
    relevant = {item: grade for item, grade in qrels.items() if grade > 0}
    if not relevant:
        raise ValueError("the query has no relevant item: its score is undefined")
    return relevant


def recall_at_k(ranking: Sequence[Item], qrels: Mapping[Item, float], k: int) -> float:
    relevant = _relevant(qrels)
    found = sum(1 for item in _first_k(ranking, k) if item in relevant)
    return found / len(relevant)


def dcg(grades: Iterable[float]) -> float:
    return sum(grade / math.log2(i + 2) for i, grade in enumerate(grades))


def ndcg_at_k(ranking: Sequence[Item], qrels: Mapping[Item, float], k: int) -> float:
    relevant = _relevant(qrels)
    gained = dcg(relevant.get(item, 0.0) for item in _first_k(ranking, k))
    ideal = dcg(sorted(relevant.values(), reverse=True)[:k])
    return gained / ideal


def mean(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("the mean of no values is undefined")
    return sum(values) / len(values)
