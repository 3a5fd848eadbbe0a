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


HYBRID = "embeddings.hybrid_search"
LABELS = {
    "fulltext": "full-text (`websearch_to_tsquery`: every term)",
    "fulltext_any": "full-text, any term",
    "fulltext_split": "full-text, dotted names split",
    "fulltext_any_split": "full-text, any term, dotted names split (`ts_rank_cd`)",
    "bm25": "plain BM25 (Python, exact statistics, dotted names split)",
    "vector": "vector (exact cosine)",
    "hybrid_rrf": "**hybrid RRF** (full-text + vector)",
    "hybrid_rrf_any": "hybrid RRF (any-term full-text + vector)",
    "hybrid_rrf_split": "hybrid RRF (split full-text + vector)",
    "hybrid_rrf_any_split": "hybrid RRF (split any-term full-text + vector)",
    "hybrid_rrf_bm25": "hybrid RRF (plain BM25 + vector)",
    HYBRID: f"**`{HYBRID}()`** (the defaults: any word by BM25, convex fusion)",
    f"{HYBRID}(fusion => 'rrf', text_match => 'all')": (
        f"`{HYBRID}(fusion => 'rrf', text_match => 'all')` (the defaults until 0.3.0)"
    ),
    f"{HYBRID}(fusion => 'rrf')": f"`{HYBRID}(fusion => 'rrf')` (BM25 + vector, RRF)",
    f"{HYBRID}(vector_weight => 0, text_match => 'any', fusion => 'rrf').text_rank": (
        "BM25 any-word, the product's (`hybrid_search()`'s text ranking alone)"
    ),
}
BASELINE = ("hybrid_rrf", ("fulltext", "vector"))


def markdown(result: Mapping[str, Any]) -> str:
    """The tables and verdicts of docs/retrieval-quality.md's second part."""
    if not result:
        return ""
    k, machine, corpus_, queries = (
        result["k"],
        result["machine"],
        result["corpus"],
        result["queries"],
    )
    flags = ", ".join(machine.get("cpu_flags", [])) or "flags not recorded"
    lines = [
        f"Measured {machine['date']} on {machine['cores']} cores ({machine['cpu']}; {flags}),"
        f" Python {machine['python']}, model {result['model']} (fp32), language configuration"
        f" `{result['language']}`: {corpus_['rows']:,} rows and {corpus_['chunks']:,} chunks"
        f" ({corpus_['chunk_tokens']} tokens, overlap {corpus_['chunk_overlap']}) from"
        f" {corpus_['modules']} modules; {queries['exact'] + queries['paraphrase']} queries"
        f" ({queries['exact']} exact-term, {queries['paraphrase']} paraphrase).",
        "",
        f"| retriever | exact R@{k} | exact nDCG@{k} | paraphrase R@{k} | paraphrase nDCG@{k}"
        f" | mixed R@{k} | mixed nDCG@{k} |",
        "|---|---|---|---|---|---|---|",
    ]
    for granularity, by_name in result["results"].items():
        lines.append(f"| *{granularity}* | | | | | | |")
        for name, scored in by_name.items():
            cells = [
                f"{scored['summary'][group][metric]:.3f}"
                for group in ("exact", "paraphrase", "mixed")
                for metric in (f"recall@{k}", f"ndcg@{k}")
            ]
            lines.append(f"| {LABELS.get(name, f'`{name}`')} | " + " | ".join(cells) + " |")
    lines += ["", *_kinds_table(result), "", *_verdicts(result)]
    return "\n".join(lines)


def _kinds_table(result: Mapping[str, Any]) -> list[str]:
    k = result["k"]
    shown = ("fulltext", "fulltext_split", "vector", "hybrid_rrf")
    kinds = [g for g in next(iter(result["results"].values()))["vector"]["summary"] if ":" in g]
    lines = [
        f"nDCG@{k} by kind of exact-term query (queries: "
        + ", ".join(
            f"{g.split(':')[1]} {result['queries']['kinds'][g.split(':')[1]]}" for g in kinds
        )
        + "):",
        "",
        "| retriever | "
        + " | ".join(f"{g.split(':')[1]}, {gr}" for gr in result["results"] for g in kinds)
        + " |",
        "|---|" + "---|" * (len(kinds) * len(result["results"])),
    ]
    for name in shown:
        cells = [
            f"{by_name[name]['summary'][g][f'ndcg@{k}']:.2f}"
            for by_name in result["results"].values()
            if name in by_name
            for g in kinds
        ]
        if cells:
            lines.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
    return lines


def _verdicts(result: Mapping[str, Any]) -> list[str]:
    """Does the RRF baseline beat both of its parts? Per granularity and query group, from
    the paired nDCG differences and their 95% bootstrap intervals."""
    fused, parts = BASELINE
    lines = []
    for granularity in result["results"]:
        for group in ("exact", "paraphrase", "mixed"):
            said = []
            beats = True
            for part in parts:
                d = result["hybrid_minus_parts_ndcg"][f"{granularity}: {fused} - {part}"][group]
                interval = f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
                if d["low"] > 0:
                    said.append(f"beats {part} ({interval})")
                else:
                    beats = False
                    word = "does not beat" if d["mean"] <= 0 else "is not clearly above"
                    said.append(f"**{word} {part}** ({interval})")
            head = "beats both" if beats else "does not beat both"
            lines.append(f"- {granularity}, {group}: hybrid RRF {head}: " + "; ".join(said) + ".")
    return [
        f"Hybrid RRF minus each single retriever, mean nDCG@{result['k']} difference over the"
        " same queries with a 95% bootstrap interval:",
        "",
        *lines,
    ]
