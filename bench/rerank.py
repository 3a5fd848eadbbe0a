"""The rerank stage's cost (worker/retrieval/rerank.py): how long a cross-encoder takes to score
one question's candidates, at the depths the stage reads, on this machine's CPU.

No cross-encoder weights can be downloaded here, so quality cannot be measured; latency can,
because it depends on the model's shape, not its weights. The cross-encoders are random-weight
BERT sequence classifiers built by tests/support/modelgen.py in the shapes of the common
MiniLM rerankers (cross-encoder/ms-marco-MiniLM-L-6-v2 and -L-12-v2: 6 or 12 layers, 384 wide,
12 heads), run through the product's CrossEncoder (worker/models/reranker.py), with the real
all-MiniLM-L6-v2 tokenizer. The passages are the quality bench's (bench/quality/stdlib.py): its
rows (docstrings, about 170 tokens on average, cut at 512 with the question) and its 128-token
chunks; each of the quality bench's questions is scored against `depth` passages drawn at random
(seeded), the stage's work for one search.

Run: `python -m bench.rerank [MODEL_DIR]` (the tokenizer's directory; default all-MiniLM-L6-v2
in EMBED_TEST_MODELS, else in ../shared/models beside the checkout). Results:
bench/results/rerank.json.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import machine
from bench.chunks import CHUNK_OVERLAP, CHUNK_TOKENS
from bench.quality import labels, stdlib
from tests.support import modelgen
from tests.support.models import shared_models_dir
from worker.models import files
from worker.models.reranker import CrossEncoder
from worker.pipeline.chunking import Splitter

SHAPES = {
    "MiniLM-L6 shape (ms-marco-MiniLM-L-6-v2)": 6,
    "MiniLM-L12 shape (ms-marco-MiniLM-L-12-v2)": 12,
}
DEPTHS = (20, 30, 60)  # the stage's default depth is 3 x k, at least 20: k = 10 reads 30
SEED = 39
RESULTS = Path(__file__).parent / "results" / "rerank.json"


def cross_encoder(root: Path, tokenizer_dir: Path, layers: int) -> CrossEncoder:
    directory = modelgen.write_model_dir(
        root / f"rerank-l{layers}",
        tokenizer_dir=tokenizer_dir,
        layers=layers,
        hidden=384,
        heads=12,
        intermediate=1536,
        max_positions=512,
        seed=layers,
        cross_encoder=True,
    )
    return CrossEncoder.load(directory, location=files.ModelLocation.of())


def timings(
    model: CrossEncoder, questions: list[str], passages: list[str], depth: int
) -> list[float]:
    rng = random.Random(SEED)
    model.score(questions[0], passages[:depth])  # warm: the session's first run allocates
    found = []
    for question in questions:
        candidates = rng.sample(passages, depth)
        started = time.perf_counter()
        model.score(question, candidates)
        found.append(time.perf_counter() - started)
    return found


def main() -> None:
    tokenizer_dir = (
        Path(sys.argv[1]) if len(sys.argv) > 1 else shared_models_dir() / "all-MiniLM-L6-v2"
    )
    objects = list(stdlib.objects())
    rows = [o.text() for o in objects]
    splitter = Splitter.from_file(tokenizer_dir / "tokenizer.json", CHUNK_TOKENS, CHUNK_OVERLAP)
    chunks = [c.text for page in stdlib.pages(objects) for c in splitter.split(page.text)]
    questions = [q.text for q in labels.load()]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as root:
        for shape, layers in SHAPES.items():
            model = cross_encoder(Path(root), tokenizer_dir, layers)
            for passages_name, passages in (("rows", rows), ("chunks", chunks)):
                for depth in DEPTHS:
                    found = timings(model, questions, passages, depth)
                    results.setdefault(shape, {}).setdefault(passages_name, {})[str(depth)] = {
                        "p50_ms": round(statistics.median(found) * 1000, 1),
                        "p95_ms": round(float(np.percentile(found, 95)) * 1000, 1),
                        "searches": len(found),
                    }
                    print(shape, passages_name, depth, results[shape][passages_name][str(depth)])
            threads = model.threads
    report = {
        "machine": machine.describe(),
        "what": "latency of the rerank stage's scoring for one search: random-weight "
        "cross-encoders in the MiniLM rerankers' shapes, quality bench passages",
        "threads": threads,
        "passages": {
            "rows": len(rows),
            "rows_tokens_mean": round(statistics.mean(splitter.count_tokens(rows[:500])), 1),
            "chunks": len(chunks),
            "chunk_tokens": CHUNK_TOKENS,
        },
        "questions": len(questions),
        "results": results,
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
