"""`make bench-beir DATA=<folder>`: retrieval quality on a dataset in BEIR's layout, through the
product's own search functions (docs/retrieval-quality.md).

    python -m bench.beir DATA [--model NAME] [--model-path DIRS] [--chunked [TOKENS]]
                              [--hybrid name=value,...]... [--watch name=value,...]
                              [--title-weights W,W,...] [--setup-sql SQL]... [--threads N]
                              [--sample QUERIES] [--results FILE] [--runs DIR]

DATA: a folder with corpus.jsonl, queries.jsonl and qrels/test.tsv (each may be gzipped).
--model: any model the worker can run, by name: a catalog model (downloaded once, or found on
  --model-path), a model directory's name on --model-path, or a remote model that --setup-sql
  registers (`SELECT embeddings.register_model(...)`). Default all-MiniLM-L6-v2.
--model-path: EMBED_MODEL_PATH (default: that variable, else ../shared/models).
--chunked: watch in chunks of TOKENS (default 200): a document ranks by its best chunk.
--hybrid: also score hybrid_search() with these options (repeatable), e.g.
  `--hybrid fusion=rrf` or `--hybrid text_match=all,text_weight=2`.
--watch: extra watch() arguments, e.g. `--watch fts_title_weight=2` (full-text fields: the
  content function then joins the title and the body with chr(31)).
--title-weights: full-text fields: the content function joins the title and the body with
  chr(31); after every ranking, the full-text and hybrid rankings again with the title weighted
  each of these (`enable_fts(title_weight => W)` on the same vectors), e.g. `1,2,3`.
--setup-sql: SQL run once the schema is installed, before the table is watched (repeatable).
--threads: the worker's inference threads (EMBED_THREADS; default 2).
--sample: a quick slice: QUERIES test queries (the same ones every time), the documents judged
  for them and as many others; its figures run higher than the whole set's.
--results: where the JSON goes (default bench/results/beir-<dataset>[-chunked].json).
--runs: also write every ranking as a TREC run file in DIR (for trec_eval by hand).

The database: a throwaway cluster of its own, or BENCH_DATABASE_URL's server (a superuser's);
stopped (or its database dropped) on SIGTERM and Ctrl-C too.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from bench.beir import dataset, rankings, report, run
from bench.machine import describe as machine
from tests.support.cluster import session_cluster
from worker import schema

ROOT = Path(__file__).resolve().parents[1]
SHARED_MODELS = ROOT.parent.parent / "shared" / "models"
DEFAULT_CHUNK_TOKENS = 200


def parser() -> argparse.ArgumentParser:
    # The docstring's first paragraph says what it does, its last where the database is; each
    # option's help is its paragraph there, in argparse's words.
    paragraphs = __doc__.split("\n\n")
    p = argparse.ArgumentParser(
        prog="python -m bench.beir",
        description=" ".join(paragraphs[0].split()),
        epilog=" ".join(paragraphs[-1].split()),
    )
    p.add_argument(
        "data",
        type=Path,
        help="a folder of a dataset in BEIR's layout: corpus.jsonl, queries.jsonl and"
        " qrels/test.tsv (each may be gzipped)",
    )
    p.add_argument(
        "--model",
        default="all-MiniLM-L6-v2",
        metavar="NAME",
        help="any model the worker can run, by name: a catalog model (downloaded once, or found"
        " on --model-path), a model directory's name on --model-path, or a remote model that"
        " --setup-sql registers (default %(default)s)",
    )
    p.add_argument(
        "--model-path",
        default=os.environ.get("EMBED_MODEL_PATH") or str(SHARED_MODELS),
        metavar="DIRS",
        help="EMBED_MODEL_PATH for the worker and the queries (default: that variable, else"
        " ../shared/models)",
    )
    p.add_argument(
        "--chunked",
        nargs="?",
        type=int,
        const=DEFAULT_CHUNK_TOKENS,
        default=None,
        metavar="TOKENS",
        help="watch in chunks of TOKENS (default %(const)s): a document ranks by its best chunk",
    )
    p.add_argument(
        "--hybrid",
        action="append",
        default=[],
        metavar="name=value,...",
        help="also score hybrid_search() with these options (repeatable), e.g. fusion=rrf or"
        " text_match=all,text_weight=2",
    )
    p.add_argument(
        "--watch",
        default="",
        metavar="name=value,...",
        help="extra watch() arguments, e.g. fts_title_weight=2 (full-text fields: the content"
        " function then joins the title and the body with chr(31))",
    )
    p.add_argument(
        "--title-weights",
        default="",
        metavar="W,W,...",
        help="full-text fields (title and body joined with chr(31)): after every ranking, the"
        " full-text and hybrid rankings again with the title weighted each of these"
        " (enable_fts(title_weight => W) on the same vectors), e.g. 1,2,3",
    )
    p.add_argument(
        "--setup-sql",
        action="append",
        default=[],
        metavar="SQL",
        help="SQL run once the schema is installed, before the table is watched (repeatable),"
        " e.g. SELECT embeddings.register_model(...) for a remote model",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=2,
        metavar="N",
        help="the worker's inference threads (EMBED_THREADS; default %(default)s)",
    )
    p.add_argument(
        "--sample",
        type=int,
        default=None,
        metavar="QUERIES",
        help="a quick slice: QUERIES test queries (the same ones every time), the documents"
        " judged for them and as many others; its figures run higher than the whole set's",
    )
    p.add_argument(
        "--results",
        type=Path,
        default=None,
        metavar="FILE",
        help="where the JSON goes (default bench/results/beir-<dataset>[-chunked<TOKENS>].json)",
    )
    p.add_argument(
        "--runs",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write every ranking as a TREC run file in DIR (for trec_eval by hand)",
    )
    return p


def measure(dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    """The figures of `args` (this parser's) on a database with the schema installed, printed
    as a table; also `python -m bench --only beir`'s section."""
    data = dataset.load(args.data)
    if args.sample is not None:
        data = dataset.sample(data, args.sample)
    chosen = rankings.default_rankings()
    chosen += [rankings.hybrid_variant(rankings.parse_option_list(h)) for h in args.hybrid]
    options = run.Options(
        model=args.model,
        model_path=args.model_path,
        chunk_tokens=args.chunked,
        threads=args.threads,
        setup_sql=tuple(args.setup_sql),
        watch_options=rankings.parse_option_list(args.watch),
        title_weights=tuple(float(w) for w in args.title_weights.split(",") if w.strip()),
    )
    result = {"machine": machine(), **run.run(dsn, data, chosen, options, runs=args.runs)}
    print("\n".join(report.lines(result)), flush=True)
    return result


def results_path(args: argparse.Namespace) -> Path:
    if args.results is not None:
        return Path(args.results)
    suffix = f"-sample{args.sample}" if args.sample is not None else ""
    suffix += f"-chunked{args.chunked}" if args.chunked else ""
    return ROOT / "results" / f"beir-{Path(args.data).resolve().name}{suffix}.json"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        data = dataset.load(args.data)  # a wrong folder says so before a cluster starts
        if args.sample is not None:
            data = dataset.sample(data, args.sample)
    except dataset.DatasetError as exc:
        print(f"bench-beir: {exc}", file=sys.stderr)
        return 2
    # SIGTERM (`timeout`, a CI's cancel) unwinds like Ctrl-C, so that the cluster below stops:
    # killed outright, the bench left its throwaway cluster running.
    signal.signal(signal.SIGTERM, _stop)
    print(
        f"bench-beir: {data.name}: {len(data.documents):,} documents, {len(data.queries):,}"
        " queries; starting a database",
        file=sys.stderr,
        flush=True,
    )
    with session_cluster(fast=False, external_env="BENCH_DATABASE_URL") as cluster:
        database = cluster.create_database(prefix="beir")
        try:
            dsn = cluster.dsn(database)
            schema.migrate(dsn)
            result = measure(dsn, args)
        finally:
            cluster.drop_database(database)
    path = results_path(args)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"bench-beir: wrote {path}", file=sys.stderr)
    return 0


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    sys.exit(main())
