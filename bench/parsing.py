"""Documents parsed in parse processes (worker/pipeline/parsing/), before and after: two
checkouts' workers on one machine, in one run, alternating round by round (the machine's speed
drifts):

- documents/s: a chunked table of real PDF, DOCX and HTML files (made here, ~2.5 KB of text
  each), embedded by a worker process from the INSERT to the last document's chunks, with the
  real all-MiniLM-L6-v2 and with a tiny generated model (where parsing is most of the work: the
  process hop's cost shows);
- rows/s of plain text rows (a watched text column): never parsed, so no hop: unchanged;
- the worker's main process while the review's DOCX (21 million empty elements, 120 MiB of XML
  in 184 KB) is parsed: its peak RSS over its RSS when ready, with a gte-small-sized model
  (random weights), and what became of the row.

    python -m bench.parsing --before <another checkout> [--after .] [--rounds 3]

A checkout is run with its own .venv (`<checkout>/.venv/bin/python -m worker run`) and migrates
its own databases. `python -m bench --only parsing` runs it with BENCH_BEFORE as the before
checkout (after only when unset).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg

from bench import worker_process
from bench.machine import describe as machine
from bench.sampling import wait_until
from tests.support.cluster import Cluster, free_port, session_cluster
from tests.support.documents import docx_bytes, pdf_bytes
from tests.support.hostile_files import docx_element_bomb
from tests.support.modelgen import GTE_SMALL, TINY, cached_model_dir

ROOT = Path(__file__).resolve().parent
SHARED_MODELS = Path(
    os.environ.get("EMBED_TEST_MODELS") or ROOT.parent.parent / "shared" / "models"
)
MINILM = "all-MiniLM-L6-v2"
TINY_NAME = "bench-tiny"  # a generated 2-layer, 32-wide model: parsing is most of the work
WORDS = [
    "refund",
    "shipping",
    "order",
    "account",
    "invoice",
    "payment",
    "delivery",
    "return",
    "policy",
    "customer",
    "service",
    "warehouse",
    "parcel",
    "receipt",
    "address",
    "support",
    "ticket",
    "warranty",
    "repair",
    "replacement",
]


# --- the workloads ----------------------------------------------------------------------------
def sentence(k: int) -> str:
    return " ".join(WORDS[(k * 7 + i * 3) % len(WORDS)] for i in range(12)) + f" ({k})."


def files(count: int) -> list[bytes]:
    """A third each PDF (3 pages), DOCX (headings, paragraphs, a table) and HTML."""
    made: list[bytes] = []
    for n in range(count):
        lines = [sentence(n * 40 + i) for i in range(36)]
        match n % 3:
            case 0:
                made.append(pdf_bytes([lines[0:12], lines[12:24], lines[24:]], title=f"Manual {n}"))
            case 1:
                blocks = [("Title", f"Handbook {n}")]
                for part in range(3):
                    blocks.append(("Heading 1", f"Part {part}"))
                    blocks += [("Normal", line) for line in lines[part * 12 : part * 12 + 12]]
                made.append(docx_bytes([*blocks, ("table", "a|b;c|d")]))
            case _:
                body = "".join(
                    f"<h2>Part {part}</h2>"
                    + "".join(f"<p>{x}</p>" for x in lines[part * 12 :][:12])
                    for part in range(3)
                )
                made.append(
                    f"<!DOCTYPE html><html><head><title>Page {n}</title></head>"
                    f"<body><h1>Page {n}</h1>{body}</body></html>".encode()
                )
    return made


class Checkout:
    """A checkout's worker: its own Python, its own migrations."""

    def __init__(self, path: Path) -> None:
        self.path = path.resolve()
        self.python = self.path / ".venv" / "bin" / "python"
        self.commit = subprocess.run(
            ["git", "-C", str(self.path), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    def database(self, cluster: Cluster) -> str:
        dsn = cluster.dsn(cluster.create_database(prefix="benchparse"))
        env = {**os.environ, "DATABASE_URL": dsn}
        env.pop("PYTHONPATH", None)
        subprocess.run(
            [str(self.python), "-m", "worker", "migrate"],
            cwd=self.path,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return dsn

    def start(
        self, dsn: str, model: str, model_path: Path, **settings: Any
    ) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        env = worker_process.worker_env(
            dsn, model, model_path, EMBED_HTTP_PORT=port, EMBED_THREADS=2, **settings
        )
        env.pop("PYTHONPATH", None)
        process = subprocess.Popen(
            [str(self.python), "-m", "worker", "run"],
            cwd=self.path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}/readyz"
        wait_until(lambda: _ready(url, process), 120, "the worker to be ready")
        return process, url


def _ready(url: str, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"worker exited ({process.returncode})")
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def documents_per_second(
    checkout: Checkout, cluster: Cluster, model: str, model_path: Path, data: list[bytes]
) -> float:
    dsn = checkout.database(cluster)
    with psycopg.connect(dsn, autocommit=True) as conn:
        if model == TINY_NAME:
            conn.execute(
                "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
                " VALUES (%s, %s, 512, 'mean')",
                (TINY_NAME, TINY["hidden"]),
            )
        conn.execute("CREATE TABLE files (id int PRIMARY KEY, body bytea)")
        conn.execute(
            "SELECT embeddings.watch('files', 'body', model => %s, chunk_tokens => 200)", (model,)
        )
        process, _ = checkout.start(dsn, model, model_path)
        try:
            started = time.perf_counter()
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO files VALUES (%s, %s)", list(enumerate(data)))
            wait_until(
                lambda: _one(conn, "SELECT count(DISTINCT id) FROM files_chunks") == len(data),
                1800,
                "the documents",
            )
            seconds = time.perf_counter() - started
        finally:
            stop(process)
        assert _one(conn, "SELECT count(*) FROM embeddings.failures") == 0
    return len(data) / seconds


def rows_per_second(checkout: Checkout, cluster: Cluster, model_path: Path, rows: int) -> float:
    dsn = checkout.database(cluster)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
        conn.execute("SELECT embeddings.watch('notes', 'body', model => %s)", (MINILM,))
        process, _ = checkout.start(dsn, MINILM, model_path)
        try:
            started = time.perf_counter()
            conn.execute(
                "INSERT INTO notes SELECT g, %s || g FROM generate_series(1, %s) g",
                (sentence(1) + " " + sentence(2) + " ", rows),
            )
            wait_until(
                lambda: _one(conn, "SELECT count(embedding) FROM notes") == rows, 1800, "the rows"
            )
            seconds = time.perf_counter() - started
        finally:
            stop(process)
    return rows / seconds


def bomb_rss(checkout: Checkout, cluster: Cluster, model_path: Path, bomb: bytes) -> dict[str, Any]:
    """The worker's main process while the DOCX is parsed (gte-small, random weights): RSS when
    ready, its peak until the row is settled (or 300 s), and what became of the row."""
    dsn = checkout.database(cluster)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
            " VALUES ('gte-small', 384, 512, 'mean') ON CONFLICT DO NOTHING"
        )
        conn.execute("CREATE TABLE files (id int PRIMARY KEY, body bytea)")
        conn.execute(
            "SELECT embeddings.watch('files', 'body', model => 'gte-small', chunk_tokens => 200)"
        )
        process, _ = checkout.start(dsn, "gte-small", model_path, EMBED_MAX_ATTEMPTS=1)
        try:
            ready = peak = worker_process.rss_mb(process.pid) or 0.0
            started = time.perf_counter()
            conn.execute("INSERT INTO files VALUES (1, %s)", (bomb,))
            outcome = "not settled within 300 s"
            while time.perf_counter() - started < 300:
                peak = max(peak, worker_process.rss_mb(process.pid) or 0.0)
                if process.poll() is not None:
                    outcome = f"the worker exited ({process.returncode})"
                    break
                failed = conn.execute("SELECT last_error FROM embeddings.failures").fetchone()
                if failed is not None:
                    outcome = f"failed: {failed[0]}"
                    break
                if _one(conn, "SELECT pending_jobs FROM embeddings.status") == 0:
                    outcome = "done"
                    break
                time.sleep(0.05)
            seconds = time.perf_counter() - started
        finally:
            stop(process)
    return {
        "ready_rss_mib": round(ready),
        "peak_rss_mib": round(peak),
        "seconds": round(seconds, 1),
        "outcome": outcome,
    }


def _one(conn: psycopg.Connection[Any], query: str) -> Any:
    row = conn.execute(query).fetchone()
    return None if row is None else row[0]


# --- the run ----------------------------------------------------------------------------------
def run(
    cluster: Cluster,
    after: Path,
    before: Path | None,
    *,
    rounds: int = 3,
    documents: int = 90,
    rows: int = 1000,
) -> dict[str, Any]:
    checkouts = {"after": Checkout(after)} | ({"before": Checkout(before)} if before else {})
    models = Path(tempfile.gettempdir()) / "embed-worker-bench-models"
    tiny = cached_model_dir(
        models, name=TINY_NAME, tokenizer_dir=SHARED_MODELS / "gte-small", **TINY
    )
    gte = cached_model_dir(
        models, name="gte-small", tokenizer_dir=SHARED_MODELS / "gte-small", **GTE_SMALL
    )
    model_path = Path(os.pathsep.join([str(SHARED_MODELS), str(tiny.parent), str(gte.parent)]))
    data = files(documents)
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in checkouts}
    for _ in range(rounds):
        for name, checkout in reversed(checkouts.items()):  # before first, then after
            got = samples[name]
            got.setdefault("documents_per_s_minilm", []).append(
                documents_per_second(checkout, cluster, MINILM, model_path, data)
            )
            got.setdefault("documents_per_s_tiny", []).append(
                documents_per_second(checkout, cluster, TINY_NAME, model_path, data)
            )
            got.setdefault("plain_rows_per_s", []).append(
                rows_per_second(checkout, cluster, model_path, rows)
            )
    bomb = docx_element_bomb()
    result: dict[str, Any] = {
        "machine": machine(),
        "documents": documents,
        "plain_rows": rows,
        "rounds": rounds,
    }
    for name, checkout in reversed(checkouts.items()):
        result[name] = {
            "commit": checkout.commit,
            **{k: round(statistics.median(v), 2) for k, v in samples[name].items()},
            "rounds": {k: [round(x, 2) for x in v] for k, v in samples[name].items()},
            "docx_120_mib_xml": bomb_rss(checkout, cluster, model_path, bomb),
        }
    if before:
        result["after_over_before"] = {
            k: round(result["after"][k] / result["before"][k], 3) for k in samples["after"]
        }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.parsing")
    parser.add_argument("--after", type=Path, default=ROOT.parent)
    parser.add_argument("--before", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--documents", type=int, default=90)
    parser.add_argument("--rows", type=int, default=1000)
    args = parser.parse_args()
    with session_cluster(fast=False, external_env="BENCH_DATABASE_URL") as cluster:
        result = run(
            cluster,
            args.after,
            args.before,
            rounds=args.rounds,
            documents=args.documents,
            rows=args.rows,
        )
    out = ROOT / "results" / "parsing.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"bench: wrote {out.relative_to(ROOT.parent)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
