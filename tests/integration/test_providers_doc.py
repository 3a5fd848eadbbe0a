"""docs/providers.md's "Try it locally" as written (issue 37): its command starts a real
OpenAI-compatible server (infinity-emb from `make infinity`), its SQL registers it, and the
worker embeds a row through it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from tests.support import infinity
from tests.support.cluster import REPO
from tests.support.process import wait_for
from worker.process.runner import Worker

DOC = Path(__file__).resolve().parents[2] / "docs" / "providers.md"


def section() -> str:
    text = DOC.read_text()
    return text[text.index("## Try it locally") : text.index("## API keys")]


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
            return int(answer.status) == 200
    except OSError:
        return False


def test_the_local_server_recipe_works_as_written(
    conn: psycopg.Connection[Any], run_once: Callable[..., Worker]
) -> None:
    infinity.require_venv()
    (command,) = re.findall(r"```sh\n(.*?)\n```", section(), re.S)
    port = infinity.free_port()
    server = subprocess.Popen(
        ["bash", "-c", command.replace("7997", str(port))],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: server.poll() is not None or _healthy(port), timeout=180, what="infinity")
        assert server.poll() is None, "the documented command exited"
        (register,) = re.findall(r"```sql\n(.*?)```", section(), re.S)
        conn.execute("CREATE TABLE faq (id int PRIMARY KEY, body text)")
        conn.execute(register.replace("7997", str(port)).encode())
        conn.execute("INSERT INTO faq VALUES (1, 'How do I reset my password?')")
        run_once()
        dims = conn.execute("SELECT vector_dims(embedding) FROM faq").fetchone()
        assert dims == (384,)
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # bash and the server it started
        server.wait(30)
