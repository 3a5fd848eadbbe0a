"""`make bench`: the product measured as users run it, side by side with what they would use
instead, in one run on one machine. Results go to bench/results/*.json; `python -m bench.report`
turns them into the table of docs/performance.md and the plots.

    python -m bench [--only writepath,oltp,latency,drain,ceiling,scaling,backlog,index,chunks,lanes,
                            idle,remote,embedder,quality,swapstall,search]
                    [--rows N] [--quick] [--quality-function SCHEMA.FUNCTION]

At scale, each run only when named in --only (each takes 5 to 15 minutes here):
    python -m bench --only million [--scale-rows N]   a 1M-row drain (bench/million.py)
    python -m bench --only workers [--scale-rows N]   1-8 workers, 100 tables (bench/manyworkers.py)
    python -m bench --only hnsw [--scale-rows N]      HNSW insert vs build at 1M (bench/hnsw.py)
    python -m bench --only status [--scale-rows N]    status and /metrics at 10M (bench/status.py)
    python -m bench --only bigwatch [--scale-rows N]  watch() on 1M and 10M rows (bench/bigwatch.py)
    python -m bench --only verify [--scale-rows N]    the verifying sweep at 1M (bench/verify.py)
    python -m bench --only upgrade [--scale-rows N] [--quick]
                                                      today's `migrate` under a running 0.2.0
                                                      with a 10M-row watched table (--quick:
                                                      100k rows; bench/upgrade.py)
    python -m bench --only documents [--document-mb MB] [--model M]
                                                      live rows during a 10 MB document
                                                      (bench/documents.py)
    BENCH_BEFORE=CHECKOUT python -m bench --only oltp
                                                      the write path's TPS, this checkout's
                                                      triggers against CHECKOUT's, alternating
                                                      (bench/oltp.py)
    BENCH_BEFORE=CHECKOUT python -m bench --only parsing
                                                      documents/s, plain rows/s and the
                                                      worker's RSS under a DOCX bomb, this
                                                      checkout against CHECKOUT's
                                                      (bench/parsing.py)
    BENCH_BEFORE=CHECKOUT python -m bench --only search
                                                      POST /search and the backlog phases of
                                                      this checkout's worker beside CHECKOUT's
                                                      (bench/search.py)
    [BENCH_BEFORE=CHECKOUT] python -m bench --only exact
                                                      search()'s exact path on 4,000 rows and
                                                      on 1,000 chunked documents, beside
                                                      CHECKOUT's, query by query
                                                      (bench/exact_search.py)
    python -m bench --only beir [--beir-data DIR] [--model M] [--beir-args "..."]
                                                      retrieval quality on a BEIR dataset
                                                      (bench/beir/, `make bench-beir`)
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from bench import (
    backlog,
    bigwatch,
    chunks,
    corpus,
    documents,
    endtoend,
    exact_search,
    hnsw,
    idle,
    index,
    lanes,
    latency,
    manyworkers,
    million,
    oltp,
    parsing,
    raw,
    remote,
    retrieval,
    search,
    status,
    swapstall,
    trust,
    upgrade,
    verify,
    writepath,
)
from bench.beir import __main__ as beir_main
from bench.machine import describe as machine
from bench.quality import evaluate, retrievers
from tests.support.cluster import Cluster, session_cluster
from tests.support.modelgen import GTE_SMALL, cached_model_dir
from worker import schema

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
SHARED_MODELS = Path(
    os.environ.get("EMBED_TEST_MODELS") or ROOT.parent.parent / "shared" / "models"
)
SECTIONS = (
    "writepath",
    "oltp",
    "latency",
    "drain",
    "ceiling",
    "scaling",
    "backlog",
    "index",
    "chunks",
    "lanes",
    "idle",
    "remote",
    "embedder",
    "quality",
    "swapstall",
    "trust",
    "search",
)
SCALE_SECTIONS = (
    "million",
    "workers",
    "hnsw",
    "status",
    "bigwatch",
    "verify",
    "upgrade",
    "documents",
    "retrieval",
    "parsing",
    "beir",
)  # never by default


def models() -> dict[str, tuple[str, Path]]:
    """name -> (model name, directory to put on EMBED_MODEL_PATH)."""
    found = {"all-MiniLM-L6-v2": ("all-MiniLM-L6-v2", SHARED_MODELS)}
    gte = cached_model_dir(
        Path(tempfile.gettempdir()) / "embed-worker-bench-models",
        name="gte-small",
        tokenizer_dir=SHARED_MODELS / "gte-small",
        **GTE_SMALL,
    )
    found["gte-small (random weights)"] = ("gte-small", gte.parent)
    return found


def fresh_db(cluster: Cluster, template: str) -> str:
    return cluster.dsn(cluster.create_database(template=template, prefix="bench"))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--only", default=",".join(SECTIONS))
    parser.add_argument("--rows", type=int, default=1000, help="corpus rows per drain")
    parser.add_argument("--quick", action="store_true", help="fewer rounds and samples")
    parser.add_argument(
        "--scale-rows", type=int, default=None, help="rows for the scale sections (smoke runs)"
    )
    parser.add_argument(
        "--remote-rounds", type=int, default=None, help="rounds per level of remote (default 2)"
    )
    parser.add_argument(
        "--quality-function",
        action="append",
        default=[],
        metavar="SCHEMA.FUNCTION",
        help="also evaluate this search function in the quality section (bench/quality/retrievers.py)",
    )
    parser.add_argument(
        "--document-mb", type=float, default=10.0, help="the long document (documents section)"
    )
    parser.add_argument(
        "--model",
        default="all-MiniLM-L6-v2",
        help="model of the documents and beir sections (documents: a directory in shared/models"
        " with its ONNX file)",
    )
    parser.add_argument(
        "--beir-data",
        type=Path,
        default=ROOT.parent.parent / "shared" / "beir" / "nfcorpus",
        help="the beir section's dataset, a folder in BEIR's layout",
    )
    parser.add_argument(
        "--beir-args",
        default="",
        help="more arguments of the beir section (python -m bench.beir -h)",
    )
    args = parser.parse_args()
    wanted = set(args.only.split(","))
    RESULTS.mkdir(exist_ok=True)
    texts = corpus.load(args.rows)
    found = models()

    def save(name: str, value: dict[str, Any]) -> None:
        value = {"machine": machine(), "corpus": corpus.describe(), **value}
        (RESULTS / f"{name}.json").write_text(json.dumps(value, indent=2) + "\n")
        print(f"bench: wrote bench/results/{name}.json", file=sys.stderr)

    def section(
        name: str, body: Callable[[], dict[str, Any]], *, results: str | None = None
    ) -> None:
        """Runs `name` when wanted; its results go to bench/results/<results or name>.json."""
        if name not in wanted:
            return
        started = time.monotonic()
        print(f"bench: {name}...", file=sys.stderr)
        save(results or name, body())
        print(f"bench: {name} took {time.monotonic() - started:.0f} s", file=sys.stderr)

    with session_cluster(fast=False, external_env="BENCH_DATABASE_URL") as cluster:
        template = cluster.create_database(prefix="benchtemplate")
        schema.migrate(cluster.dsn(template))

        section(
            "writepath",
            lambda: writepath.run(fresh_db(cluster, template), rounds=3 if args.quick else 7),
        )
        section(
            "trust",
            lambda: trust.run(
                fresh_db(cluster, template), fresh_db(cluster, template), quick=args.quick
            ),
        )
        section(
            "swapstall",
            lambda: swapstall.run(fresh_db(cluster, template), seconds=8 if args.quick else 20),
        )
        section(
            "oltp",
            lambda: oltp.run(
                fresh_db(cluster, template),
                seconds=5 if args.quick else 10,
                rounds=2 if args.quick else 3,
                before=Path(os.environ["BENCH_BEFORE"]) if os.environ.get("BENCH_BEFORE") else None,
            ),
        )
        section(
            "latency",
            lambda: {
                label: latency.run(
                    fresh_db(cluster, template), name, path, samples=50 if args.quick else 200
                )
                for label, (name, path) in found.items()
            },
        )

        rounds = 1 if args.quick else 3

        def worker_and_model(name: str, path: Path, inputs: list[str], **kw: Any) -> dict[str, Any]:
            # Side by side, alternating round by round (the machine's speed drifts): the whole
            # worker (process start and model load included), then the model alone on the same
            # texts and threads. Each is the median of its rounds.
            workers, alone = [], []
            for _ in range(rounds):
                workers.append(
                    endtoend.drain(fresh_db(cluster, template), name, path, inputs, **kw)
                )
                alone.append(
                    raw.run(path / name, inputs, variant=kw.get("variant", "fp32"), repeats=1)
                )
            result = endtoend.median(workers)
            result["raw_onnxruntime"] = endtoend.median(alone)
            return result

        def drains() -> dict[str, Any]:
            return {
                label: {
                    variant: worker_and_model(name, path, texts, variant=variant)
                    for variant in ("fp32", "int8")
                }
                for label, (name, path) in found.items()
            }

        section("drain", drains)

        def ceiling() -> dict[str, Any]:
            # The workload of the quoted ceiling: gte-small at 128-token inputs, fp32.
            name, path = found["gte-small (random weights)"]
            fixed = corpus.fixed_length(500, 128, SHARED_MODELS / "gte-small" / "tokenizer.json")
            result = worker_and_model(name, path, fixed)
            result["quoted_ceiling_docs_per_s"] = {"measured matmul-bound": 37, "theoretical": 56}
            tokenizer = Tokenizer.from_file(str(SHARED_MODELS / "gte-small" / "tokenizer.json"))
            tokenizer.no_truncation()  # the file truncates and pads to 128 itself:
            tokenizer.no_padding()  # measure the real lengths
            result["tokens"] = corpus.length_distribution(corpus.token_lengths(fixed, tokenizer))
            return result

        section("ceiling", ceiling)

        def scaling() -> dict[str, Any]:
            name, path = found["gte-small (random weights)"]
            shapes = {"1 worker x 2 threads": (1, 2), "2 workers x 1 thread": (2, 1)}
            samples: dict[str, list[dict[str, Any]]] = {shape: [] for shape in shapes}
            for _ in range(rounds):  # alternating, as above
                for shape, (workers, threads) in shapes.items():
                    samples[shape].append(
                        endtoend.drain(
                            fresh_db(cluster, template),
                            name,
                            path,
                            texts,
                            workers=workers,
                            threads=threads,
                        )
                    )
            return {shape: endtoend.median(runs) for shape, runs in samples.items()}

        section("scaling", scaling)
        section(
            "index",
            lambda: index.run(fresh_db(cluster, template), rounds=3 if args.quick else 7),
        )
        section(
            "million",
            lambda: million.run(
                fresh_db(cluster, template),
                SHARED_MODELS / "gte-small",
                rows=args.scale_rows or 1_000_000,
            ),
        )
        section(
            "workers",
            lambda: manyworkers.run(
                lambda: fresh_db(cluster, template),
                SHARED_MODELS / "gte-small",
                rows_per_table=(args.scale_rows or 20_000) // manyworkers.TABLES,
                rounds=args.remote_rounds or (1 if args.quick else 2),
            ),
        )
        section(
            "retrieval",  # recall and latency of each search path (bench/retrieval.py)
            lambda: retrieval.run(
                fresh_db(cluster, template),
                SHARED_MODELS / "all-MiniLM-L6-v2",
                rows=args.scale_rows or 100_000,
                queries=50 if args.quick else 100,
            ),
            # One file per scale (docs/performance.md compares 100k and 1M rows).
            results=f"retrieval-{args.scale_rows or 100_000}",
        )
        section(
            "hnsw",
            lambda: hnsw.run(
                fresh_db(cluster, template),
                SHARED_MODELS / "all-MiniLM-L6-v2",
                rows=args.scale_rows or 1_000_000,
                rounds=3 if args.quick else 8,
            ),
        )
        section(
            "status",
            lambda: status.run(
                fresh_db(cluster, template),
                SHARED_MODELS / "gte-small",
                rows=args.scale_rows or 10_000_000,
                rounds=1 if args.quick else 3,
            ),
        )
        section(
            "verify",
            lambda: verify.run(
                fresh_db(cluster, template), rows=args.scale_rows or 1_000_000, quick=args.quick
            ),
        )
        section(
            "bigwatch",
            lambda: bigwatch.run(
                cluster,
                sizes=(args.scale_rows,) if args.scale_rows else bigwatch.SIZES,
                rounds=args.remote_rounds or (1 if args.quick else 2),
            ),
        )

        upgrade_rows = args.scale_rows or (upgrade.QUICK_ROWS if args.quick else upgrade.ROWS)

        def upgrading() -> dict[str, Any]:
            result = upgrade.run(cluster, SHARED_MODELS, rows=upgrade_rows)
            print(upgrade.table(result))
            return result

        section(  # the figure of docs/performance.md in upgrade.json, smaller runs beside it
            "upgrade",
            upgrading,
            results="upgrade" if upgrade_rows == upgrade.ROWS else f"upgrade-{upgrade_rows}",
        )
        section(
            "backlog",
            lambda: backlog.run(
                fresh_db(cluster, template),
                *found["all-MiniLM-L6-v2"],
                rows=5000 if args.quick else 20000,
            ),
        )

        section(
            "search",  # POST /search against the in-caller baseline; while a backlog drains
            lambda: search.run(
                fresh_db(cluster, template),
                SHARED_MODELS,
                backlog_rows=5000 if args.quick else 20000,
                hnsw_rows=args.scale_rows or (20_000 if args.quick else 100_000),
                seconds=3.0 if args.quick else 6.0,
                rounds=1 if args.quick else 3,
                before=Path(os.environ["BENCH_BEFORE"]) if os.environ.get("BENCH_BEFORE") else None,
            ),
        )

        section(
            "exact",  # search()'s exact path, this checkout's against BENCH_BEFORE's
            lambda: exact_search.run(
                fresh_db(cluster, template),
                lambda: cluster.dsn(cluster.create_database(prefix="benchbefore")),
                before=Path(os.environ["BENCH_BEFORE"]) if os.environ.get("BENCH_BEFORE") else None,
                samples=100 if args.quick else 300,
            ),
        )

        section(
            "chunks",  # chunked targets against one vector per row, on the same long documents
            lambda: chunks.run(
                lambda: fresh_db(cluster, template),
                *found["all-MiniLM-L6-v2"],
                max_tokens=256,
                rounds=1 if args.quick else 3,
            ),
        )

        section(
            "lanes",  # live rows during a backfill vs idle; a model change's wall time
            lambda: lanes.run(
                fresh_db(cluster, template),
                SHARED_MODELS / "gte-small",
                rows=5000 if args.quick else 20000,
                samples=50 if args.quick else 100,
            ),
        )

        section(
            "documents",  # live rows while a long document is embedded in pieces, vs idle
            lambda: documents.run(
                fresh_db(cluster, template),
                SHARED_MODELS / args.model,
                mb=args.document_mb,
                samples=20 if args.quick else 50,
                one_batch_mb=min(args.document_mb, 1.0),
            ),
        )

        section(
            "idle",  # an idle worker: insert-to-vector latency (also prepared), CPU while waiting
            lambda: idle.run(
                cluster,
                fresh_db(cluster, template),
                SHARED_MODELS / "gte-small",
                samples=50 if args.quick else 100,
            ),
        )

        section(
            "remote",  # the worker through infinity-emb vs infinity's own throughput
            lambda: remote.run(
                fresh_db(cluster, template),
                texts[: 192 if args.quick else 512],
                rounds=args.remote_rounds or (1 if args.quick else 2),
            ),
        )

        def quality() -> dict[str, Any]:
            # Retrieval quality (recall@10, nDCG@10) of full-text, vector and hybrid search
            # over the standard library's documentation, rows and chunks (bench/quality/).
            chosen = evaluate.default_retrievers()  # embeddings.hybrid_search() among them
            chosen += [
                retrievers.SqlFunction.named(name)
                for name in dict.fromkeys(args.quality_function)
                if name not in {r.name for r in chosen}
            ]
            return evaluate.run(
                fresh_db(cluster, template),
                SHARED_MODELS / "all-MiniLM-L6-v2",
                chosen,
                details=RESULTS / "quality_details.jsonl",  # per query; not committed
            )

        section("quality", quality)
        before = os.environ.get("BENCH_BEFORE")
        section(
            "parsing",
            lambda: parsing.run(
                cluster, ROOT.parent, Path(before) if before else None, rounds=rounds
            ),
        )

        def beir() -> dict[str, Any]:
            # The product's search on a public benchmark, through SQL and POST /search
            # (bench/beir/; docs/retrieval-quality.md).
            beir_args = beir_main.parser().parse_args(
                [str(args.beir_data), "--model", args.model, *shlex.split(args.beir_args)]
            )
            return beir_main.measure(fresh_db(cluster, template), beir_args)

        section("beir", beir, results=f"beir-{args.beir_data.resolve().name}")

    if "embedder" in wanted and (ROOT / "embedder.py").is_file():
        # Model-only figures (raw onnxruntime, sentence-transformers side by side, int8 fidelity,
        # padding) come from their own module, in their own process.
        subprocess.run([sys.executable, "-m", "bench.embedder"], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
