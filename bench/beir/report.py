"""The BEIR bench's printed report: what was run, on what, and a Markdown table of the figures."""

from __future__ import annotations

from typing import Any

COLUMNS = (
    ("ndcg@10", "nDCG@10", "{:.4f}"),
    ("recall@100", "R@100", "{:.4f}"),
    ("mrr@10", "MRR@10", "{:.4f}"),
    ("p50_ms", "p50 ms", "{:.1f}"),
    ("p95_ms", "p95 ms", "{:.1f}"),
    ("http_p50_ms", "HTTP p50 ms", "{:.1f}"),
)


def lines(result: dict[str, Any]) -> list[str]:
    data, machine, embedding = result["dataset"], result["machine"], result["embedding"]
    chunked = (
        f", chunked ({result['chunk_tokens']} tokens: {embedding['chunks']:,} chunks)"
        if result["chunk_tokens"]
        else ""
    )
    out = [
        f"BEIR {data['name']}: {data['documents']:,} documents, {data['queries']:,} test queries,"
        f" {data['judgements']:,} judgements",
        *(f"  sha256 {name} {digest}" for name, digest in sorted(data["sha256"].items())),
        f"model {result['model']}{chunked}: embedded in {embedding['wall_s']:.1f} s,"
        f" {embedding['docs_per_s']:.2f} documents/s (`embed-worker run --once`, model load included)",
        f"machine {machine['cpu']}, {machine['cores']} cores ({', '.join(machine['cpu_flags'])}),"
        f" Python {machine['python']}, {machine['date']}",
        "latency: each SQL call from Python with the query's vector given (p50, p95);"
        " POST /search's, the query embedded by the worker (HTTP p50)",
        "SQL and POST /search returned the same rankings for every query of every ranking",
        "",
        "| ranking | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for figures in result["rankings"].values():
        cells = [fmt.format(figures[key]) for key, _, fmt in COLUMNS]
        out.append(f"| {figures['label']} | " + " | ".join(cells) + " |")
    first = next(iter(result["rankings"].values()))
    out += [
        "",
        f"nDCG@10 by length of query: {first['short_queries']} of up to 3 words,"
        f" {first['long_queries']} longer",
        "",
        "| ranking | short | long |",
        "|---|---|---|",
        *(
            f"| {f['label']} | {f['ndcg@10_short']:.4f} | {f['ndcg@10_long']:.4f} |"
            for f in result["rankings"].values()
        ),
    ]
    turns = result["latency_k10"]
    out += [
        "",
        f"k = 10, vector and default hybrid called in turn for every query, twice: p50"
        f" {turns['vector_p50_ms']:.1f} ms and {turns['hybrid_p50_ms']:.1f} ms,"
        f" hybrid / vector {turns['hybrid_over_vector']:.2f} (SQL, the vector given);"
        f" {turns['http_vector_p50_ms']:.1f} ms and {turns['http_hybrid_p50_ms']:.1f} ms,"
        f" {turns['http_hybrid_over_vector']:.2f} through POST /search (the question embedded)",
    ]
    return out
