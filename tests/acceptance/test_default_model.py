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
from tests.support.process import WorkerProcess

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
