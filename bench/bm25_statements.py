"""The BM25 ranking's two statements for large tables, paired on one table (bench/retrieval.py's):
the counted one (each word's df counted before the words sought are chosen) and the sampled one
(df estimated from a sample of the table's pages, the candidates budgeted), both in the
generated `embeddings_<id>_bm25_ranking()` (sql/59_bm25.sql), which picks one by the table's
estimate. Here each question is ranked by both, the statement chosen by setting
embeddings.bm25_sample_rows above or below the table (the counted one from
embeddings.bm25_prune_rows rows, 10,000: below, the plain one stands in), in alternating
order (neither always finds the pages the other read), best of the rounds per question: p50 /
p95 / mean ms each, and how often the two rankings agree (the same keys in the same order to
`depth`; the top 10s' overlap), and where they do not, each ranking's first document: the
texts are cycled (a table of 1,000,000 rows holds each docstring about 125 times, so a ranking
to depth 100 is the copies of one or two docstrings), and two docstrings near a tie that trade
places trade every key.

Questions: a docstring's first 3 words and another's first 8 (the texts are the docstrings,
cycled), and the 3-word ones under a filter one row in 100 passes (`tenant`, no index on it).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import psycopg
from psycopg import sql

MODES = {
    "counted": "SET embeddings.bm25_sample_rows = 1e15",
    "sampled": "SET embeddings.bm25_sample_rows = 0",
}
DEPTH = 100  # hybrid_search()'s default depth: what it asks of the ranking
TENANT = '{"tenant": 7}'


def questions(texts: list[str]) -> dict[str, list[tuple[str, str | None]]]:
    """Each set's (question, filter) pairs."""
    short = [" ".join(texts[(n * 7) % len(texts)].split()[:3]) for n in range(40)]
    longer = [" ".join(texts[(n * 13 + 5) % len(texts)].split()[:8]) for n in range(20)]
    return {
        "3_words": [(q, None) for q in short],
        "8_words": [(q, None) for q in longer],
        "3_words_filtered": [(q, TENANT) for q in short[:12]],
    }


def _percentile(times: list[float], share: float) -> float:
    ordered = sorted(times)
    return round(ordered[int(share * (len(ordered) - 1))], 1)


def _agreement(counted: list[list[Any]], sampled: list[list[Any]]) -> dict[str, Any]:
    top10 = [  # a question of stop words only ranks nothing either way: the same answer
        len({repr(k) for k in a[:10]} & {repr(k) for k in b[:10]}) / min(10, len(a))
        if a
        else float(not b)
        for a, b in zip(counted, sampled, strict=True)
    ]
    return {
        "same_ranking": sum(a == b for a, b in zip(counted, sampled, strict=True)),
        "top10_overlap_mean": round(statistics.fmean(top10), 3),
        "top10_overlap_min": round(min(top10), 3),
    }


def _first(rows: list[dict[str, Any]]) -> list[Any] | None:
    """A ranking's first document, its text cut short, and its score."""
    return [rows[0].get("content", "")[:60], round(rows[0]["text_score"], 4)] if rows else None


def _differing(
    asked: list[str], counted: list[list[dict[str, Any]]], sampled: list[list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """The questions the two rank apart, each with both rankings' first document and its
    score, and the counted score of the sampled ranking's first text where the counted ranking
    holds it: texts cycled through a table tie or nearly tie, and a copy of one text against a
    copy of another is a different key, by itself no worse an answer (the scores say)."""
    out = []
    for question, a, b in zip(asked, counted, sampled, strict=True):
        if [row["key"] for row in a] == [row["key"] for row in b]:
            continue
        its_counted = next(
            (row["text_score"] for row in a if b and row.get("content") == b[0].get("content")),
            None,
        )
        out.append(
            {
                "question": question,
                "counted_first": _first(a),
                "sampled_first": _first(b),
                "its_counted_score": None if its_counted is None else round(its_counted, 4),
            }
        )
    return out


def run(
    conn: psycopg.Connection[Any], table: str, texts: list[str], *, rounds: int
) -> dict[str, Any]:
    """Both statements on every question of each set, on `table` (watched, full text enabled)."""
    (target,) = conn.execute(
        "SELECT id FROM embeddings.targets WHERE source = %s::regclass", (table,)
    ).fetchone() or (None,)
    if target is None:
        raise ValueError(f"{table} is not watched: it has no BM25 ranking to time")
    ranking = sql.SQL("SELECT embeddings.{}(%s, %s::jsonb, %s)").format(
        sql.Identifier(f"embeddings_{target}_bm25_ranking")
    )
    out: dict[str, Any] = {"depth": DEPTH, "rounds": rounds}
    for name, pairs in questions(texts).items():
        best = {mode: [float("inf")] * len(pairs) for mode in MODES}
        ranked: dict[str, list[list[dict[str, Any]]]] = {
            mode: [[] for _ in pairs] for mode in MODES
        }
        for first in pairs[:2]:  # each statement's plan made before anything is timed
            for setting in MODES.values():
                conn.execute(setting)
                conn.execute(ranking, (*first, DEPTH))
        for r in range(rounds):
            for i, params in enumerate(pairs):
                order = list(MODES) if (i + r) % 2 == 0 else list(MODES)[::-1]
                for mode in order:
                    conn.execute(MODES[mode])
                    started = time.perf_counter()
                    (rows,) = conn.execute(ranking, (*params, DEPTH)).fetchone() or ([],)
                    best[mode][i] = min(best[mode][i], (time.perf_counter() - started) * 1000)
                    ranked[mode][i] = rows or []
        conn.execute("RESET embeddings.bm25_sample_rows")
        out[name] = {
            "questions": len(pairs),
            **{
                mode: {
                    "p50_ms": _percentile(times, 0.5),
                    "p95_ms": _percentile(times, 0.95),
                    "mean_ms": round(statistics.fmean(times), 1),
                }
                for mode, times in best.items()
            },
            **_agreement(
                *([[row["key"] for row in rows] for rows in ranked[mode]] for mode in MODES)
            ),
            "differing": _differing([q for q, _ in pairs], ranked["counted"], ranked["sampled"]),
        }
    return out
