"""Questions before backlog at the model's level, in one process and on one model, as a worker
that serves HTTP embeds: a backlog thread embedding batches of 32 texts of about 120 tokens
(the pipeline's shape) without pause, and question threads each embedding a question every
THINK seconds; alternating rounds of:

  alone      questions only (their idle latency), then the backlog only (its rate);
  shared     one session, the backlog not told apart (no turns: as before questions first);
  yielding   one session, the backlog yields between its calls (the default);
  niced      the backlog at nice 10 on a session of its own (EMBED_BACKLOG_NICE=10).

Reports each question's p50/p95 latency against alone's, the backlog's texts/s against
alone's, and the resident memory the niced session added.

    python -m bench.questions_first [--rounds 3] [--seconds 8]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from bench import calls, corpus
from worker.models import priority
from worker.models.embedder import Embedder

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
THINK = 0.03  # seconds between a question thread's answer and its next question
QUESTION_THREADS = 2
BACKLOG_BATCH = 32


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _window(
    model: Embedder, seconds: float, *, questions: bool, backlog: str | None
) -> dict[str, Any]:
    """`backlog`: None (no backlog), "shared", "yielding" or "niced"."""
    texts = corpus.load(BACKLOG_BATCH * 4, seed=3)
    words = " ".join(texts).split()
    stop = time.monotonic() + seconds
    latencies: list[float] = []
    embedded = [0]

    def ask(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop:
            start = rng.randrange(len(words) - 20)
            question = " ".join(words[start : start + rng.randint(4, 14)])
            began = time.perf_counter()
            model.embed([question])
            latencies.append(time.perf_counter() - began)
            time.sleep(THINK)

    def drain() -> None:
        if backlog != "shared":
            priority.lower(10 if backlog == "niced" else 0)
        n = 0
        while time.monotonic() < stop:
            start = (n * BACKLOG_BATCH) % len(texts)
            model.embed(texts[start : start + BACKLOG_BATCH])
            embedded[0] += BACKLOG_BATCH
            n += 1

    threads = [
        threading.Thread(target=ask, args=(i,)) for i in range(QUESTION_THREADS if questions else 0)
    ]
    if backlog is not None:
        threads.append(threading.Thread(target=drain))
    elapsed = calls.run_all(threads)
    found: dict[str, Any] = {"backlog_texts_per_s": round(embedded[0] / elapsed, 1)}
    if latencies:
        timed = calls.percentiles(latencies)
        found["questions"] = timed["calls"]
        found["p50_ms"] = timed["p50_ms"]
        found["p95_ms"] = timed["p95_ms"]
    return found


def run(rounds: int, seconds: float) -> dict[str, Any]:
    model = Embedder.load(MODELS / "all-MiniLM-L6-v2")
    model.embed(["warm"])
    rss_one = _rss_mb()
    runs: dict[str, list[dict[str, Any]]] = {}
    for _ in range(rounds):
        runs.setdefault("questions alone", []).append(
            _window(model, seconds, questions=True, backlog=None)
        )
        runs.setdefault("backlog alone", []).append(
            _window(model, seconds, questions=False, backlog="yielding")
        )
        for mode in ("shared", "yielding", "niced"):
            runs.setdefault(mode, []).append(_window(model, seconds, questions=True, backlog=mode))
        for name in runs:
            print(name, runs[name][-1], flush=True)
    rss_two = _rss_mb()

    def median(name: str, key: str) -> float:
        return float(statistics.median(r[key] for r in runs[name]))

    idle_p95 = median("questions alone", "p95_ms")
    alone_rate = median("backlog alone", "backlog_texts_per_s")
    ratios = {
        mode: {
            "p95/alone": round(median(mode, "p95_ms") / idle_p95, 2),
            "p50/alone": round(median(mode, "p50_ms") / median("questions alone", "p50_ms"), 2),
            "backlog rate/alone": round(median(mode, "backlog_texts_per_s") / alone_rate, 2),
        }
        for mode in ("shared", "yielding", "niced")
    }
    return {
        "model": "all-MiniLM-L6-v2",
        "threads": model.threads,
        "question_threads": QUESTION_THREADS,
        "think_seconds": THINK,
        "backlog_batch": BACKLOG_BATCH,
        "seconds": seconds,
        "rounds": runs,
        "ratios": ratios,
        "rss_mb_one_session": round(rss_one, 1),
        "rss_mb_after_niced_session": round(rss_two, 1),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    result = run(args.rounds, args.seconds)
    print(json.dumps(result["ratios"], indent=2))
    out = Path(__file__).parent / "results" / "questions_first.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
