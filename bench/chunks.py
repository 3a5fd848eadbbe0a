"""Chunked targets against one vector per row, on the same long documents: `make bench`'s
`chunks` section (`python -m bench --only chunks`).

Documents of ~`tokens_each` tokens are built from standard-library docstrings (paragraphs).
Per round, alternating (the machine's speed drifts): drain them with `embed-worker run --once`
into a plain target (one vector per row, the model truncates each document at its token limit)
and into a chunked target (chunk_tokens 200, overlap 20); then edit one paragraph in the middle
of every document and drain the chunked target again. Reported: wall time (process start and
model load included), tokens the model ran on per second ([CLS]/[SEP] counted, as the model
sees them), and the share of the edited documents' chunks whose vector was reused.
"""

from __future__ import annotations

import functools
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from bench import corpus, worker_process
from worker.models.onnx import load_tokenizer

CHUNK_TOKENS = 200
CHUNK_OVERLAP = 20


@functools.cache
def _docstrings() -> tuple[str, ...]:
    return tuple(t for t in corpus.stdlib_docstrings() if len(t) > 200)


def documents(n: int, tokens_each: int, tokenizer: Any, *, seed: int = 3) -> list[str]:
    """`n` documents of about `tokens_each` tokens: docstrings joined as paragraphs."""
    pool = list(_docstrings())
    random.Random(seed).shuffle(pool)
    found: list[str] = []
    parts: list[str] = []
    tokens = 0
    for text in pool:
        parts.append(text)
        tokens += len(tokenizer.encode(text, add_special_tokens=False).ids)
        if tokens >= tokens_each:
            found.append("\n\n".join(parts))
            parts, tokens = [], 0
            if len(found) == n:
                return found
    raise RuntimeError(f"the corpus holds fewer than {n} documents of {tokens_each} tokens")


def edit_one_paragraph(text: str, replacement: str) -> str:
    paragraphs = text.split("\n\n")
    paragraphs[len(paragraphs) // 2] = replacement
    return "\n\n".join(paragraphs)


def _load(dsn: str, model: str, texts: list[str], chunked: bool) -> None:
    options = f", chunk_tokens => {CHUNK_TOKENS}, chunk_overlap => {CHUNK_OVERLAP}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE bench_docs (id bigint PRIMARY KEY, body text NOT NULL)")
        conn.execute(
            f"SELECT embeddings.watch('bench_docs', 'body', model => %s{options if chunked else ''})",
            (model,),
        )
        with conn.cursor() as cur, cur.copy("COPY bench_docs (id, body) FROM STDIN") as copy:
            for i, text in enumerate(texts):
                copy.write_row((i, text))


def _drain(dsn: str, model: str, model_path: Path) -> worker_process.ProcessCost:
    env = worker_process.worker_env(dsn, model, model_path, EMBED_THREADS=2)
    cost = worker_process.run_once(env)
    with psycopg.connect(dsn, autocommit=True) as conn:
        failed = conn.execute("SELECT count(*) FROM embeddings.failures").fetchone()
        pending = conn.execute("SELECT pending_jobs FROM embeddings.status").fetchone()
    if cost.returncode != 0 or failed != (0,) or pending != (0,):
        raise RuntimeError(f"drain incomplete: exit {cost.returncode}, {failed} failed")
    return cost


def _chunk_hashes(dsn: str) -> list[tuple[int, str, str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT id, chunk_hash, chunk FROM bench_docs_chunks").fetchall()
    return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]


def _model_tokens(tokenizer: Any, texts: list[str], limit: int | None) -> int:
    """Tokens the model runs on for `texts`: [CLS] and [SEP] included, cut at `limit`."""
    counts = [len(e.ids) + 2 for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    return sum(min(c, limit) if limit else c for c in counts)


def run(
    fresh_dsn: Callable[[], str],
    model: str,
    model_path: Path,
    max_tokens: int,
    *,
    n: int = 40,
    tokens_each: int = 2000,
    rounds: int = 3,
) -> dict[str, Any]:
    tokenizer = load_tokenizer(model_path / model / "tokenizer.json", max_tokens=None)
    texts = documents(n, tokens_each, tokenizer)
    replacements = documents(n, 60, tokenizer, seed=11)
    edited = [edit_one_paragraph(t, r) for t, r in zip(texts, replacements, strict=True)]
    samples: list[dict[str, Any]] = []
    for _ in range(rounds):
        # Process start and model load, with nothing to embed: subtracted for the "steady"
        # rates, since the plain drain is short enough for them to weigh.
        idle_dsn = fresh_dsn()
        _load(idle_dsn, model, [], chunked=False)
        startup_s = _drain(idle_dsn, model, model_path).wall_s
        plain_dsn, chunked_dsn = fresh_dsn(), fresh_dsn()
        _load(plain_dsn, model, texts, chunked=False)
        plain = _drain(plain_dsn, model, model_path)
        plain_tokens = _model_tokens(tokenizer, texts, max_tokens)

        _load(chunked_dsn, model, texts, chunked=True)
        chunked = _drain(chunked_dsn, model, model_path)
        before = _chunk_hashes(chunked_dsn)
        chunked_tokens = _model_tokens(tokenizer, [c for _, _, c in before], None)

        with psycopg.connect(chunked_dsn, autocommit=True) as conn, conn.cursor() as cur:
            started = time.perf_counter()
            cur.executemany(
                "UPDATE bench_docs SET body = %s WHERE id = %s",
                [(text, i) for i, text in enumerate(edited)],
            )
            update_s = time.perf_counter() - started
        after_edit = _drain(chunked_dsn, model, model_path)
        after = _chunk_hashes(chunked_dsn)
        known = {(key, digest) for key, digest, _ in before}
        new = [chunk for key, digest, chunk in after if (key, digest) not in known]
        new_tokens = _model_tokens(tokenizer, new, None)
        samples.append(
            {
                "documents": n,
                "document_tokens_mean": round(
                    statistics.mean(
                        len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False)
                    )
                ),
                "startup_s": round(startup_s, 2),
                "plain": {
                    "wall_s": round(plain.wall_s, 2),
                    "model_tokens": plain_tokens,
                    "tokens_per_s": round(plain_tokens / plain.wall_s),
                    "steady_tokens_per_s": round(plain_tokens / (plain.wall_s - startup_s)),
                    "docs_per_s": round(n / plain.wall_s, 2),
                    "peak_rss_mb": round(plain.peak_rss_mb, 1),
                },
                "chunked": {
                    "wall_s": round(chunked.wall_s, 2),
                    "chunks": len(before),
                    "model_tokens": chunked_tokens,
                    "tokens_per_s": round(chunked_tokens / chunked.wall_s),
                    "steady_tokens_per_s": round(chunked_tokens / (chunked.wall_s - startup_s)),
                    "docs_per_s": round(n / chunked.wall_s, 2),
                    "peak_rss_mb": round(chunked.peak_rss_mb, 1),
                },
                "tokens_per_s_ratio_chunked_to_plain": round(
                    (chunked_tokens / chunked.wall_s) / (plain_tokens / plain.wall_s), 3
                ),
                "steady_ratio_chunked_to_plain": round(
                    (chunked_tokens / (chunked.wall_s - startup_s))
                    / (plain_tokens / (plain.wall_s - startup_s)),
                    3,
                ),
                "after_one_paragraph_edit": {
                    "update_statement_s": round(update_s, 3),
                    "wall_s": round(after_edit.wall_s, 2),
                    "chunks": len(after),
                    "new_chunks": len(new),
                    "reused_share": round(1 - len(new) / len(after), 4),
                    "model_tokens": new_tokens,
                },
            }
        )
    ordered = sorted(samples, key=lambda s: s["steady_ratio_chunked_to_plain"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["rounds_ratio"] = [s["tokens_per_s_ratio_chunked_to_plain"] for s in samples]
    chosen["rounds_steady_ratio"] = [s["steady_ratio_chunked_to_plain"] for s in samples]
    chosen["model"] = model
    chosen["chunk_tokens"], chosen["chunk_overlap"] = CHUNK_TOKENS, CHUNK_OVERLAP
    return chosen
