"""A worker without EMBED_MODEL follows the database's default model (embeddings.default_model()):
/readyz waits for that model, and POST /embed without "model" embeds with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from typing import Any

import psycopg

from tests.support.models import MINILM
from tests.support.process import WorkerProcess, wait_for

Conn = psycopg.Connection[Any]


def test_without_embed_model_the_worker_serves_the_database_default(
    conn: Conn, dsn: str, start_worker: Callable[..., WorkerProcess], worker_env: dict[str, str]
) -> None:
    conn.execute("SELECT embeddings.set_default_model(%s)", (MINILM,))
    worker = start_worker(EMBED_MODEL="")  # unset: gte-small is not on this machine

    worker.wait_ready()
    request = urllib.request.Request(
        worker.url + "/embed", data=json.dumps({"input": "hello world"}).encode(), method="POST"
    )
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=60) as response:
        served = json.loads(response.read())["embedding"]

    named = subprocess.run(
        [sys.executable, "-m", "worker", "embed", "--model", MINILM, "hello world"],
        capture_output=True,
        text=True,
        env={**os.environ, **worker_env, "DATABASE_URL": dsn},
        timeout=120,
    )
    assert named.returncode == 0, named.stderr
    assert served == json.loads(named.stdout)[0]
    assert f"model {MINILM}" in worker.log_text()


def _metrics(worker: WorkerProcess) -> str:
    try:
        return worker.get("/metrics")[1].decode()
    except OSError:  # (not listening yet)
        return ""


def test_a_model_no_one_uses_any_more_leaves_the_load_gauge(
    conn: Conn, start_worker: Callable[..., WorkerProcess]
) -> None:
    """The README's offline start: the database's default (gte-small) cannot load here, so its
    load gauge is 0 and the shipped alert fires, rightly. Once the default is a model the worker
    has and a table uses it, nothing uses gte-small: its series leaves /metrics, and the alert
    clears on a healthy worker."""
    worker = start_worker(EMBED_MODEL="")
    failed = 'embed_worker_model_loaded{model="gte-small"} 0.0'
    wait_for(lambda: failed in _metrics(worker), 60, what="gte-small's failed load, exported")
    assert _info_lines(worker) == []  # no default model loaded: no info (was one, unlabelled)

    conn.execute("SELECT embeddings.set_default_model(%s)", (MINILM,))
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('docs', 'body')")
    conn.execute("INSERT INTO docs VALUES (1, 'the cat sat on the mat')")
    wait_for(
        lambda: conn.execute("SELECT embedding IS NOT NULL FROM docs").fetchone() == (True,),
        60,
        what="the row embedded",
    )
    worker.wait_ready()
    # (the counter of failed loads keeps its history: only the gauge the alert reads goes)
    gauge = 'embed_worker_model_loaded{model="gte-small"}'
    wait_for(lambda: gauge not in _metrics(worker), 30, what="gte-small's load gauge gone")
    assert f'embed_worker_model_loaded{{model="{MINILM}"}} 1.0' in _metrics(worker)
    [info] = _info_lines(worker)
    assert f'name="{MINILM}"' in info, info


def _info_lines(worker: WorkerProcess) -> list[str]:
    """embed_worker_model_info's samples, as /metrics shows them."""
    return [
        line for line in _metrics(worker).splitlines() if line.startswith("embed_worker_model_info")
    ]
