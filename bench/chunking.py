"""Splitting cost of one very long document: `python -m bench.chunking`.

Builds a ~1 MB document from standard-library docstrings (bench/corpus.py), splits it with the
real gte-small tokenizer at chunk_tokens 200 / overlap 20, and reports wall time, tokens per
second and the process's peak RSS growth during the split (ru_maxrss; tokenizers allocates
outside Python's heap, so tracemalloc alone would miss it). Run it in a fresh process: peak RSS
only ever grows.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from bench import corpus
from bench.machine import describe as machine
from worker.pipeline.chunking import Splitter

SHARED_MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"


def document(size: int) -> str:
    parts: list[str] = []
    total = 0
    for text in corpus.stdlib_docstrings():
        parts.append(text)
        total += len(text) + 2
        if total >= size:
            break
    return "\n\n".join(parts)[:size]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(size: int, chunk_tokens: int, chunk_overlap: int, model: str) -> dict[str, object]:
    splitter = Splitter.from_file(
        SHARED_MODELS / model / "tokenizer.json", chunk_tokens, chunk_overlap
    )
    splitter.split(document(1000))  # warm up the tokenizer
    text = document(size)
    before = peak_rss_mb()
    started = time.perf_counter()
    chunks = splitter.split(text)
    seconds = time.perf_counter() - started
    tokens = len(splitter.spans(text))
    return {
        "model": model,
        "chars": len(text),
        "tokens": tokens,
        "chunks": len(chunks),
        "chunk_tokens": chunk_tokens,
        "chunk_overlap": chunk_overlap,
        "seconds": round(seconds, 3),
        "tokens_per_second": round(tokens / seconds),
        "peak_rss_growth_mb": round(peak_rss_mb() - before, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.chunking")
    parser.add_argument("--bytes", type=int, default=1_000_000)
    parser.add_argument("--model", default="gte-small")
    args = parser.parse_args()
    print(json.dumps(measure(args.bytes, 200, 20, args.model), indent=2))


if __name__ == "__main__":
    main()
