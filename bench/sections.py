"""The sections of `make bench` (bench/__main__.py), in the order they run: each a function of
one run's shared parts (Run: the cluster and its template database, the arguments, the corpus,
the models), returning what goes to bench/results/<its results file>.json."""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass
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
    upkeep,
    verify,
    writepath,
)
from bench.beir import __main__ as beir_main
from bench.quality import evaluate, retrievers
from tests.support.cluster import Cluster

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
SHARED_MODELS = Path(
    os.environ.get("EMBED_TEST_MODELS") or ROOT.parent.parent / "shared" / "models"
)


@dataclass
class Run:
    """What every section of one `python -m bench` may use."""

    cluster: Cluster
    template: str  # a migrated database each section's own is made from
    args: argparse.Namespace
    texts: list[str]  # the corpus's rows (--rows)
    found: dict[str, tuple[str, Path]]  # label -> (model name, directory on EMBED_MODEL_PATH)

    def fresh_db(self) -> str:
        return self.cluster.dsn(
            self.cluster.create_database(template=self.template, prefix="bench")
        )

    @property
    def quick(self) -> bool:
        return bool(self.args.quick)

    @property
    def rounds(self) -> int:
        return 1 if self.quick else 3

    @property
    def before(self) -> Path | None:
        """BENCH_BEFORE: another checkout, measured beside this one where a section can."""
        before = os.environ.get("BENCH_BEFORE")
        return Path(before) if before else None


@dataclass(frozen=True)
class Section:
    name: str
    measure: Callable[[Run], dict[str, Any]]
    results: Callable[[Run], str] | None = None  # its results file, when not its name

    def results_name(self, run: Run) -> str:
        return self.name if self.results is None else self.results(run)


def _worker_and_model(
    run: Run, name: str, path: Path, inputs: list[str], **kw: Any
) -> dict[str, Any]:
    """Side by side, alternating round by round (the machine's speed drifts): the whole worker
    (process start and model load included), then the model alone on the same texts and
    threads. Each is the median of its rounds."""
    workers, alone = [], []
    for _ in range(run.rounds):
        workers.append(endtoend.drain(run.fresh_db(), name, path, inputs, **kw))
        alone.append(raw.run(path / name, inputs, variant=kw.get("variant", "fp32"), repeats=1))
    result = endtoend.median(workers)
    result["raw_onnxruntime"] = endtoend.median(alone)
    return result


def _drains(run: Run) -> dict[str, Any]:
    return {
        label: {
            variant: _worker_and_model(run, name, path, run.texts, variant=variant)
            for variant in ("fp32", "int8")
        }
        for label, (name, path) in run.found.items()
    }


def _ceiling(run: Run) -> dict[str, Any]:
    """The workload of the quoted ceiling: gte-small at 128-token inputs, fp32."""
    name, path = run.found["gte-small (random weights)"]
    fixed = corpus.fixed_length(500, 128, SHARED_MODELS / "gte-small" / "tokenizer.json")
    result = _worker_and_model(run, name, path, fixed)
    result["quoted_ceiling_docs_per_s"] = {"measured matmul-bound": 37, "theoretical": 56}
    tokenizer = Tokenizer.from_file(str(SHARED_MODELS / "gte-small" / "tokenizer.json"))
    tokenizer.no_truncation()  # the file truncates and pads to 128 itself:
    tokenizer.no_padding()  # measure the real lengths
    result["tokens"] = corpus.length_distribution(corpus.token_lengths(fixed, tokenizer))
    return result


def _scaling(run: Run) -> dict[str, Any]:
    name, path = run.found["gte-small (random weights)"]
    shapes = {"1 worker x 2 threads": (1, 2), "2 workers x 1 thread": (2, 1)}
    samples: dict[str, list[dict[str, Any]]] = {shape: [] for shape in shapes}
    for _ in range(run.rounds):  # alternating, as above
        for shape, (workers, threads) in shapes.items():
            samples[shape].append(
                endtoend.drain(
                    run.fresh_db(), name, path, run.texts, workers=workers, threads=threads
                )
            )
    return {shape: endtoend.median(runs) for shape, runs in samples.items()}


def _upgrade_rows(run: Run) -> int:
    return run.args.scale_rows or (upgrade.QUICK_ROWS if run.quick else upgrade.ROWS)


def _upgrading(run: Run) -> dict[str, Any]:
    result = upgrade.run(run.cluster, SHARED_MODELS, rows=_upgrade_rows(run))
    print(upgrade.table(result))
    return result


def _quality(run: Run) -> dict[str, Any]:
    """Retrieval quality (recall@10, nDCG@10) of full-text, vector and hybrid search over the
    standard library's documentation, rows and chunks (bench/quality/)."""
    chosen = evaluate.default_retrievers()  # embeddings.hybrid_search() among them
    chosen += [
        retrievers.SqlFunction.named(name)
        for name in dict.fromkeys(run.args.quality_function)
        if name not in {r.name for r in chosen}
    ]
    return evaluate.run(
        run.fresh_db(),
        SHARED_MODELS / "all-MiniLM-L6-v2",
        chosen,
        details=RESULTS / "quality_details.jsonl",  # per query; not committed
    )


def _beir(run: Run) -> dict[str, Any]:
    """The product's search on a public benchmark, through SQL and POST /search (bench/beir/;
    docs/retrieval-quality.md)."""
    args = run.args
    beir_args = beir_main.parser().parse_args(
        [str(args.beir_data), "--model", args.model, *shlex.split(args.beir_args)]
    )
    return beir_main.measure(run.fresh_db(), beir_args)


SECTIONS = (
    Section("writepath", lambda r: writepath.run(r.fresh_db(), rounds=3 if r.quick else 7)),
    Section("trust", lambda r: trust.run(r.fresh_db(), r.fresh_db(), quick=r.quick)),
    Section("swapstall", lambda r: swapstall.run(r.fresh_db(), seconds=8 if r.quick else 20)),
    Section(
        "oltp",
        lambda r: oltp.run(
            r.fresh_db(),
            seconds=5 if r.quick else 10,
            rounds=2 if r.quick else 3,
            before=r.before,
        ),
    ),
    Section(
        "latency",
        lambda r: {
            label: latency.run(r.fresh_db(), name, path, samples=50 if r.quick else 200)
            for label, (name, path) in r.found.items()
        },
    ),
    Section("drain", _drains),
    Section("ceiling", _ceiling),
    Section("scaling", _scaling),
    Section("index", lambda r: index.run(r.fresh_db(), rounds=3 if r.quick else 7)),
    Section(
        "million",
        lambda r: million.run(
            r.fresh_db(), SHARED_MODELS / "gte-small", rows=r.args.scale_rows or 1_000_000
        ),
    ),
    Section(
        "workers",
        lambda r: manyworkers.run(
            r.fresh_db,
            SHARED_MODELS / "gte-small",
            rows_per_table=(r.args.scale_rows or 20_000) // manyworkers.TABLES,
            rounds=r.args.remote_rounds or (1 if r.quick else 2),
        ),
    ),
    Section(
        "retrieval",  # recall and latency of each search path (bench/retrieval.py)
        lambda r: retrieval.run(
            r.fresh_db(),
            SHARED_MODELS / "all-MiniLM-L6-v2",
            rows=r.args.scale_rows or 100_000,
            queries=50 if r.quick else 100,
            rounds=1 if r.quick else 2,
        ),
        # One file per scale (docs/performance.md compares 100k and 1M rows).
        results=lambda r: f"retrieval-{r.args.scale_rows or 100_000}",
    ),
    Section(
        "hnsw",
        lambda r: hnsw.run(
            r.fresh_db(),
            SHARED_MODELS / "all-MiniLM-L6-v2",
            rows=r.args.scale_rows or 1_000_000,
            rounds=3 if r.quick else 8,
        ),
    ),
    Section(
        "status",
        lambda r: status.run(
            r.fresh_db(),
            SHARED_MODELS / "gte-small",
            rows=r.args.scale_rows or 10_000_000,
            rounds=r.rounds,
        ),
    ),
    Section(
        "verify",
        lambda r: verify.run(r.fresh_db(), rows=r.args.scale_rows or 1_000_000, quick=r.quick),
    ),
    Section(
        "bigwatch",
        lambda r: bigwatch.run(
            r.cluster,
            sizes=(r.args.scale_rows,) if r.args.scale_rows else bigwatch.SIZES,
            rounds=r.args.remote_rounds or (1 if r.quick else 2),
        ),
    ),
    Section(  # the figure of docs/performance.md in upgrade.json, smaller runs beside it
        "upgrade",
        _upgrading,
        results=lambda r: (
            "upgrade" if _upgrade_rows(r) == upgrade.ROWS else f"upgrade-{_upgrade_rows(r)}"
        ),
    ),
    Section(
        "backlog",
        lambda r: backlog.run(
            r.fresh_db(), *r.found["all-MiniLM-L6-v2"], rows=5000 if r.quick else 20000
        ),
    ),
    Section(
        "search",  # POST /search against the in-caller baseline; while a backlog drains
        lambda r: search.run(
            r.fresh_db(),
            SHARED_MODELS,
            backlog_rows=5000 if r.quick else 20000,
            hnsw_rows=r.args.scale_rows or (20_000 if r.quick else 100_000),
            seconds=3.0 if r.quick else 6.0,
            rounds=r.rounds,
            clients=search.ISSUE_COUNTS if r.quick else search.CLIENT_COUNTS,
            before=r.before,
        ),
    ),
    Section(
        "upkeep",  # a worker's statements for every watched table, this checkout's and BENCH_BEFORE's
        lambda r: upkeep.run(
            r.fresh_db(),
            lambda: r.cluster.dsn(r.cluster.create_database(prefix="benchbefore")),
            before=r.before,
            rounds=2 if r.quick else 6,
        ),
    ),
    Section(
        "exact",  # search()'s exact path, this checkout's against BENCH_BEFORE's
        lambda r: exact_search.run(
            r.fresh_db(),
            lambda: r.cluster.dsn(r.cluster.create_database(prefix="benchbefore")),
            before=r.before,
            samples=100 if r.quick else 300,
        ),
    ),
    Section(
        "chunks",  # chunked targets against one vector per row, on the same long documents
        lambda r: chunks.run(
            r.fresh_db,
            *r.found["all-MiniLM-L6-v2"],
            max_tokens=256,
            rounds=r.rounds,
        ),
    ),
    Section(
        "lanes",  # live rows during a backfill vs idle; a model change's wall time
        lambda r: lanes.run(
            r.fresh_db(),
            SHARED_MODELS / "gte-small",
            rows=5000 if r.quick else 20000,
            samples=50 if r.quick else 100,
        ),
    ),
    Section(
        "documents",  # live rows while a long document is embedded in pieces, vs idle
        lambda r: documents.run(
            r.fresh_db(),
            SHARED_MODELS / r.args.model,
            mb=r.args.document_mb,
            samples=20 if r.quick else 50,
            one_batch_mb=min(r.args.document_mb, 1.0),
        ),
    ),
    Section(
        "idle",  # an idle worker: insert-to-vector latency (also prepared), CPU while waiting
        lambda r: idle.run(
            r.cluster, r.fresh_db(), SHARED_MODELS / "gte-small", samples=50 if r.quick else 100
        ),
    ),
    Section(
        "remote",  # the worker through infinity-emb vs infinity's own throughput
        lambda r: remote.run(
            r.fresh_db(),
            r.texts[: 192 if r.quick else 512],
            rounds=r.args.remote_rounds or (1 if r.quick else 2),
        ),
    ),
    Section("quality", _quality),
    Section(
        "parsing",
        lambda r: parsing.run(r.cluster, ROOT.parent, r.before, rounds=r.rounds),
    ),
    Section("beir", _beir, results=lambda r: f"beir-{r.args.beir_data.resolve().name}"),
)
