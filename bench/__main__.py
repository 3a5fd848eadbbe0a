"""`make bench`: the product measured as users run it, side by side with what they would use
instead, in one run on one machine. Results go to bench/results/*.json; `python -m bench.report`
turns them into the table of docs/performance.md and the plots.

    python -m bench [--only writepath,oltp,latency,drain,ceiling,scaling,backlog,index,chunks,lanes,
                            idle,remote,embedder,quality,swapstall,search,upkeep]
                    [--rows N] [--quick] [--quality-function SCHEMA.FUNCTION]

At scale, each run only when named in --only (each takes 5 to 15 minutes here):
    python -m bench --only million [--scale-rows N]   a 1M-row drain (bench/million.py)
    python -m bench --only workers [--scale-rows N]   1-8 workers, 100 tables (bench/manyworkers.py)
    python -m bench --only hnsw [--scale-rows N]      HNSW insert vs build at 1M (bench/hnsw.py)
    python -m bench --only status [--scale-rows N]    status and /metrics at 10M (bench/status.py)
    python -m bench --only bigwatch [--scale-rows N]  watch() on 1M and 10M rows (bench/bigwatch.py)
    python -m bench --only verify [--scale-rows N]    the verifying sweep at 1M (bench/verify.py)
    python -m bench --only retrieval [--scale-rows N] each search path's recall and latency at
                                                      100k rows, and BM25's two statements for
                                                      large tables paired (bench/retrieval.py;
                                                      1M rows: 45 minutes)
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
    [BENCH_BEFORE=CHECKOUT] python -m bench --only upkeep
                                                      what the statements a worker runs for
                                                      every watched table cost at 10 and 50
                                                      tables, in a catalog as made and after
                                                      10 code reinstalls, beside CHECKOUT's
                                                      schema (bench/upkeep.py)
    python -m bench --only beir [--beir-data DIR] [--model M] [--beir-args "..."]
                                                      retrieval quality on a BEIR dataset
                                                      (bench/beir/, `make bench-beir`)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import corpus
from bench.machine import describe as machine
from bench.sections import RESULTS, ROOT, SECTIONS, SHARED_MODELS, Run
from tests.support.cluster import session_cluster
from tests.support.modelgen import GTE_SMALL, cached_model_dir
from worker import schema

DEFAULT_SECTIONS = (
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
    "upkeep",
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


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--only", default=",".join(DEFAULT_SECTIONS))
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
    return parser


def main() -> int:
    asked = parser()
    args = asked.parse_args()
    wanted = set(args.only.split(","))
    if unknown := wanted - {section.name for section in SECTIONS} - {"embedder"}:
        asked.error(f"--only: no section {', '.join(sorted(unknown))}")
    RESULTS.mkdir(exist_ok=True)
    with session_cluster(fast=False, external_env="BENCH_DATABASE_URL") as cluster:
        template = cluster.create_database(prefix="benchtemplate")
        schema.migrate(cluster.dsn(template))
        run = Run(cluster, template, args, corpus.load(args.rows), models())
        for section in SECTIONS:
            if section.name not in wanted:
                continue
            started = time.monotonic()
            print(f"bench: {section.name}...", file=sys.stderr)
            save(section.results_name(run), section.measure(run))
            print(f"bench: {section.name} took {time.monotonic() - started:.0f} s", file=sys.stderr)

    if "embedder" in wanted and (ROOT / "embedder.py").is_file():
        # Model-only figures (raw onnxruntime, sentence-transformers side by side, int8 fidelity,
        # padding) come from their own module, in their own process.
        subprocess.run([sys.executable, "-m", "bench.embedder"], check=True)
    return 0


def save(name: str, value: dict[str, Any]) -> None:
    value = {"machine": machine(), "corpus": corpus.describe(), **value}
    (RESULTS / f"{name}.json").write_text(json.dumps(value, indent=2) + "\n")
    print(f"bench: wrote bench/results/{name}.json", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
