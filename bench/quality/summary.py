"""What the quality section reports beside the scores: means per query group, paired
differences with bootstrap intervals, the corpus and query set described, per-query details."""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bench.quality import metrics, stdlib
from bench.quality.labels import Query
from bench.quality.retrievers import Fusion, Retriever
from worker.pipeline.chunking import Splitter


def groups(queries: list[Query]) -> dict[str, list[Query]]:
    """exact, paraphrase, mixed (all of them), then each kind of exact-term query."""
    found: dict[str, list[Query]] = {
        "exact": [q for q in queries if q.type == "exact"],
        "paraphrase": [q for q in queries if q.type == "paraphrase"],
        "mixed": list(queries),
    }
    for kind in sorted({q.kind for q in queries if q.type == "exact"}):
        found[f"exact:{kind}"] = [q for q in queries if q.kind == kind]
    return {name: members for name, members in found.items() if members}


def by_group(per_query: Mapping[str, list[float]], queries: list[Query], k: int) -> dict[str, Any]:
    return {
        name: {
            "queries": len(members),
            f"recall@{k}": round(metrics.mean([per_query[q.id][0] for q in members]), 4),
            f"ndcg@{k}": round(metrics.mean([per_query[q.id][1] for q in members]), 4),
        }
        for name, members in groups(queries).items()
    }


def paired(
    a: Mapping[str, list[float]], b: Mapping[str, list[float]], queries: list[Query]
) -> dict[str, dict[str, float]]:
    """Mean nDCG of a minus b per group, with a 95% bootstrap interval over the queries (the
    same queries scored by both, so the interval reflects the query sample, not the run)."""
    return {
        name: bootstrap([a[q.id][1] - b[q.id][1] for q in members])
        for name, members in groups(queries).items()
        if ":" not in name
    }


def bootstrap(diffs: list[float], *, rounds: int = 2000, seed: int = 0) -> dict[str, float]:
    values = np.array(diffs)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(rounds, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "mean": round(float(values.mean()), 4),
        "low": round(float(low), 4),
        "high": round(float(high), 4),
    }


def corpus(
    objects: list[stdlib.DocObject],
    pages: list[stdlib.Page],
    chunks: list[tuple[str, str]],
    splitter: Splitter,
    max_tokens: int,
) -> dict[str, Any]:
    row_tokens = splitter.count_tokens([o.text() for o in objects])
    chunk_tokens = splitter.count_tokens([text for _, text in chunks])
    kinds: dict[str, int] = {}
    for o in objects:
        kinds[o.kind] = kinds.get(o.kind, 0) + 1
    return {
        "source": "documented public modules, classes, functions and methods of the standard "
        "library, read from its source with ast (bench/quality/stdlib.py)",
        "rows": len(objects),
        "row_kinds": kinds,
        "row_tokens_mean": round(statistics.mean(row_tokens), 1),
        "rows_over_model_limit": sum(1 for t in row_tokens if t + 2 > max_tokens),
        "modules": len(pages),
        "page_chars": sum(len(p.text) for p in pages),
        "chunks": len(chunks),
        "chunk_tokens_mean": round(statistics.mean(chunk_tokens), 1),
        "chunk_tokens": splitter.chunk_tokens,
        "chunk_overlap": splitter.chunk_overlap,
        "model_max_tokens": max_tokens,
    }


def query_set(
    queries: list[Query],
    dropped: list[str],
    row_qrels: Mapping[str, Mapping[int, int]],
    chunk_qrels: Mapping[str, Mapping[int, int]],
) -> dict[str, Any]:
    kinds: dict[str, int] = {}
    for q in queries:
        kinds[q.kind] = kinds.get(q.kind, 0) + 1
    return {
        "exact": sum(q.type == "exact" for q in queries),
        "paraphrase": sum(q.type == "paraphrase" for q in queries),
        "kinds": kinds,
        "relevant_rows_mean": round(statistics.mean(len(row_qrels[q.id]) for q in queries), 2),
        "relevant_chunks_mean": round(statistics.mean(len(chunk_qrels[q.id]) for q in queries), 2),
        "dropped": dropped,
    }


def explain(retriever: Retriever) -> str:
    if isinstance(retriever, Fusion):
        return (
            f"reciprocal rank fusion of {retriever.first.name} and {retriever.second.name}:"
            f" k = {retriever.rrf_k}, weights {retriever.weights}, top {retriever.depth} of each"
        )
    return (retriever.__doc__ or retriever.name).strip().split("\n")[0]


def write_details(
    path: Path,
    queries: list[Query],
    results: Mapping[str, Mapping[str, Any]],
    names: Mapping[str, list[str]],
    qrels: Mapping[str, Mapping[str, Mapping[int, int]]],
) -> None:
    """One JSON line per query: its text, labels, and every retriever's top items with scores
    (item names: a row's qualified name, a chunk's `module#seq`)."""
    lines = []
    for q in queries:
        entry: dict[str, Any] = {"id": q.id, "kind": q.kind, "text": q.text}
        for granularity, by_name in results.items():
            label = names[granularity]
            entry[granularity] = {
                "relevant": {label[i]: g for i, g in qrels[granularity][q.id].items()},
                **{
                    name: {
                        "recall_ndcg": scored["per_query"][q.id],
                        "top": [label[i] for i in scored["rankings"][q.id]],
                    }
                    for name, scored in by_name.items()
                },
            }
        lines.append(json.dumps(entry, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n")
