"""The BEIR bench from a dataset's folder to its figures: the corpus loaded and watched as a
user would (bench/beir/load.py), embedded by `embed-worker run --once`, every test query ranked
through the SQL functions and through POST /search of a running worker (bench/beir/rankings.py),
the two compared, the SQL rankings scored (bench/beir/scoring.py)."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from bench import worker_process
from bench.beir import load, scoring
from bench.beir.dataset import Dataset
from bench.beir.rankings import (
    HttpSearch,
    Ranked,
    Ranking,
    SqlSearch,
    Vector32,
    alternating_p50,
    rank,
)
from tests.support.cluster import free_port
from worker.config import Settings
from worker.pipeline.targets import load_remote_models

K = 100  # every figure is of the first 100 results at most (R@100)


@dataclass(frozen=True)
class Options:
    model: str
    model_path: str  # EMBED_MODEL_PATH for the worker and this process
    chunk_tokens: int | None = None
    threads: int = 2
    setup_sql: Sequence[str] = ()  # run once after the schema is there (register_model()...)
    watch_options: dict[str, Any] | None = None
    # Full-text fields: after the rankings as watched, the full-text and hybrid rankings again
    # with the title weighted each of these (enable_fts(title_weight => w) on the same vectors).
    title_weights: Sequence[float] = ()


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else 0.0


def query_vectors(dsn: str, options: Options, queries: dict[str, str]) -> dict[str, Vector32]:
    """Each query embedded alone, as POST /search embeds it: the model loaded the way the
    worker loads it (a catalog name, a directory on EMBED_MODEL_PATH, or a remote model
    registered in the database), with the worker's threads."""
    settings = Settings.from_env(
        {
            **os.environ,
            "DATABASE_URL": dsn,
            "EMBED_MODEL_PATH": options.model_path,
            "EMBED_THREADS": str(options.threads),
        }
    )
    with psycopg.connect(dsn) as conn:
        remote = load_remote_models(conn)
    models = settings.loaded_models(retry_after=0.0)
    models.follow(lambda: remote)
    model = models.get(options.model)
    return {query_id: model.embed([text])[0] for query_id, text in queries.items()}


class SearchingWorker:
    """`embed-worker run --no-pull` serving POST /search (its HTTP side only: the queue is
    drained already) until closed."""

    def __init__(self, dsn: str, options: Options) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": dsn,
            "EMBED_HTTP_PORT": str(self.port),
            "EMBED_MODEL": options.model,
            "EMBED_MODEL_PATH": options.model_path,
            "EMBED_THREADS": str(options.threads),
            "EMBED_LOG_LEVEL": "WARNING",
        }
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - written while the worker runs
        self.process = subprocess.Popen(
            [sys.executable, "-m", "worker", "run", "--no-pull"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            worker_process.wait_ready(
                self.process, self.port, self._log, seconds=300, what="the searching worker"
            )
        except RuntimeError:
            self.close()
            raise

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)
        self._log.close()


SHORT_QUERY_WORDS = 3  # up to this many words: a keyword query; more: a sentence, a question


def by_length(scores: scoring.Scores, queries: dict[str, str]) -> dict[str, float | int]:
    """nDCG@10 over the short queries (keywords) and over the longer ones (sentences), the
    kind of query a default is tuned for."""
    short = [q for q, text in queries.items() if len(text.split()) <= SHORT_QUERY_WORDS]
    long = [q for q in queries if q not in set(short)]
    found: dict[str, float | int] = {"short_queries": len(short), "long_queries": len(long)}
    for name, members in (("short", short), ("long", long)):
        values = [scores.per_query[q]["ndcg@10"] for q in members]
        found[f"ndcg@10_{name}"] = round(sum(values) / len(values), 4) if values else 0.0
    return found


def disagreements(sql_ranked: Ranked, http_ranked: Ranked) -> list[str]:
    """The queries whose two rankings differ."""
    return [
        query_id
        for query_id, ranking in sql_ranked.rankings.items()
        if http_ranked.rankings.get(query_id) != ranking
    ]


def measure_ranking(
    dsn: str, dataset: Dataset, ranking: Ranking, vectors: dict[str, Vector32], port: int
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """One ranking's figures and its results per query, through SQL and POST /search, which
    must agree."""
    with closing(SqlSearch(dsn, load.TABLE, vectors=vectors, k=K)) as search:
        by_sql = rank(search, ranking, dataset.queries)
    with closing(HttpSearch(port, load.TABLE, k=K)) as search:
        by_http = rank(search, ranking, dataset.queries)
    differing = disagreements(by_sql, by_http)
    if differing:
        first = differing[0]
        raise RuntimeError(
            f"{ranking.name}: SQL and POST /search disagree on {len(differing)} queries,"
            f" e.g. {first}: SQL {by_sql.rankings[first][:5]}"
            f" HTTP {by_http.rankings[first][:5]}"
        )
    scores = scoring.score(by_sql.rankings, dataset.qrels)
    figures = {
        "label": ranking.label,
        **{name: round(value, 4) for name, value in scores.mean.items()},
        **by_length(scores, dataset.queries),
        "p50_ms": round(_percentile(by_sql.seconds, 50), 2),
        "p95_ms": round(_percentile(by_sql.seconds, 95), 2),
        "http_p50_ms": round(_percentile(by_http.seconds, 50), 2),
        "http_p95_ms": round(_percentile(by_http.seconds, 95), 2),
        "queries_with_results": sum(1 for r in by_sql.rankings.values() if r),
        "agree_with_http": len(by_sql.rankings),
    }
    return figures, by_sql.rankings


def run(
    dsn: str,
    dataset: Dataset,
    rankings: Sequence[Ranking],
    options: Options,
    *,
    runs: Path | None = None,
) -> dict[str, Any]:
    """The figures of every ranking, with what was run and how long embedding took; with
    `runs`, each ranking's results as a TREC run file there."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in options.setup_sql:
            conn.execute(statement.encode())
        load.create(
            conn,
            dataset,
            model=options.model,
            chunk_tokens=options.chunk_tokens,
            watch_options=options.watch_options,
            fields=bool(options.title_weights),
        )
    print(
        f"bench-beir: embedding {len(dataset.documents):,} documents with {options.model}"
        " (embed-worker run --once)",
        file=sys.stderr,
        flush=True,
    )
    embedded = load.embed(dsn, options.model, options.model_path, EMBED_THREADS=options.threads)
    print(
        f"bench-beir: embedded in {embedded.wall_s:.0f} s; ranking {len(dataset.queries):,}"
        f" queries {len(rankings)} ways",
        file=sys.stderr,
        flush=True,
    )
    vectors = query_vectors(dsn, options, dataset.queries)
    worker = SearchingWorker(dsn, options)
    figures: dict[str, Any] = {}
    ranked: dict[str, dict[str, list[str]]] = {}
    try:
        for ranking in rankings:
            figures[ranking.name], ranked[ranking.name] = measure_ranking(
                dsn, dataset, ranking, vectors, worker.port
            )
        # Vector against the default hybrid at k = 10 (what an application asks for), in turn.
        vector, hybrid = rankings[0], next(r for r in rankings if r.name == "hybrid")
        with closing(SqlSearch(dsn, load.TABLE, vectors=vectors, k=10)) as search:
            latency = alternating_p50(search, [vector, hybrid], dataset.queries)
        with closing(HttpSearch(worker.port, load.TABLE, k=10)) as search:
            latency_http = alternating_p50(search, [vector, hybrid], dataset.queries)
        for weight in options.title_weights:
            with psycopg.connect(dsn, autocommit=True) as conn:
                load.weigh_title(conn, weight)
            for ranking in rankings[1:]:
                fielded = ranking.with_title_weight(weight)
                figures[fielded.name], ranked[fielded.name] = measure_ranking(
                    dsn, dataset, fielded, vectors, worker.port
                )
    finally:
        worker.close()
    if runs is not None:
        write_rankings(runs, ranked)
    return {
        "dataset": {
            "name": dataset.name,
            "documents": len(dataset.documents),
            "queries": len(dataset.queries),
            "judgements": dataset.judgements,
            "sha256": dataset.digests,
        },
        "model": options.model,
        "chunk_tokens": options.chunk_tokens,
        "embedding": {
            "documents": embedded.documents,
            "chunks": embedded.chunks,
            "wall_s": round(embedded.wall_s, 1),
            "docs_per_s": round(embedded.docs_per_s, 2),
        },
        "rankings": figures,
        "latency_k10": {
            "vector_p50_ms": latency[vector.name],
            "hybrid_p50_ms": latency[hybrid.name],
            "hybrid_over_vector": round(latency[hybrid.name] / latency[vector.name], 2),
            "http_vector_p50_ms": latency_http[vector.name],
            "http_hybrid_p50_ms": latency_http[hybrid.name],
            "http_hybrid_over_vector": round(
                latency_http[hybrid.name] / latency_http[vector.name], 2
            ),
        },
        "median_query_words": statistics.median(len(q.split()) for q in dataset.queries.values()),
    }


def write_rankings(path: Path, rankings: dict[str, dict[str, list[str]]]) -> None:
    """Every query's ranking per ranking, as a TREC run file each (for trec_eval by hand)."""
    path.mkdir(parents=True, exist_ok=True)
    for name, by_query in rankings.items():
        with (path / f"{name}.run").open("w") as out:
            for query_id, ranking in by_query.items():
                for position, document in enumerate(ranking, start=1):
                    out.write(f"{query_id} Q0 {document} {position} {-position} {name}\n")
