"""BEIR's figures of a ranking, computed by ir-measures (through pytrec_eval, trec_eval's own
code), as BEIR computes them: nDCG@10 with the qrels' grades as gains, Recall@100, and MRR@10
(the reciprocal rank of the first relevant document in the first 10).

A ranking is a list of document ids, best first. trec_eval orders a run by score, not by the
order given (equal scores by document id, descending), so each ranking is handed over with
scores that fall strictly with the position: the order scored is the order the product
returned. Every judged query counts: one with no results scores 0 (pytrec_eval alone would
leave it out of the mean).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import ir_measures
from ir_measures import RR, R, nDCG

MEASURES = {"ndcg@10": nDCG @ 10, "recall@100": R @ 100, "mrr@10": RR @ 10}


@dataclass(frozen=True)
class Scores:
    mean: dict[str, float]  # measure -> mean over the judged queries
    per_query: dict[str, dict[str, float]]  # query id -> measure -> value


def run_of(rankings: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
    """Rankings as a trec run: each document's score is minus its position."""
    run: dict[str, dict[str, float]] = {}
    for query, ranking in rankings.items():
        scored: dict[str, float] = {}
        for position, document in enumerate(ranking):
            scored.setdefault(document, -float(position))  # a repeat counts at its first place
        run[query] = scored
    return run


def score(rankings: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]]) -> Scores:
    """The measures of `rankings` against `qrels`, over every query of `qrels`."""
    run = {q: r for q, r in run_of(rankings).items() if r and q in qrels}
    judged = {q: dict(j) for q, j in qrels.items()}
    per_query: dict[str, dict[str, float]] = {q: dict.fromkeys(MEASURES, 0.0) for q in judged}
    names = {measure: name for name, measure in MEASURES.items()}
    for metric in ir_measures.iter_calc(list(MEASURES.values()), judged, run):
        per_query[metric.query_id][names[metric.measure]] = float(metric.value)
    mean = {
        name: sum(values[name] for values in per_query.values()) / len(per_query)
        for name in MEASURES
    }
    return Scores(mean, per_query)
