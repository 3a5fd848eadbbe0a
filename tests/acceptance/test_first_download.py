"""A registry model downloaded on first use by a running worker: the download holds only the
tables of that model (with "downloading" as the reason, /readyz saying so), the other tables are
served meanwhile, its tables' jobs are taken once it loads, and SIGTERM ends the worker at once
(exit 0) without waiting for the download, leaving no partial files in the cache."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.cluster import REPO
from tests.support.fakehub import FakeHub
from tests.support.models import MINILM, require_minilm, shared_models_dir
from tests.support.process import WorkerProcess, wait_for
from tests.support.standin_hub import serve_gte_small

Conn = psycopg.Connection[Any]

MODEL_FILE = "onnx/model.onnx"


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as server:
        yield server


@pytest.fixture
def downloading_env(hub: FakeHub, tmp_path: Path) -> dict[str, str]:
    """A worker whose default model, gte-small, is not on disk: the stand-in hub serves it, its
    weights crawling until hub.release(); MiniLM is on EMBED_MODEL_PATH."""
    minilm = require_minilm()
    models = tmp_path / "models"
    models.mkdir()
    (models / MINILM).symlink_to(minilm)
    env = serve_gte_small(hub, shared_models_dir(), tmp_path / "pins")
    hub.crawl("Supabase/gte-small", MODEL_FILE, seconds=600)
    return {
        **env,
        "PYTHONPATH": f"{tmp_path / 'pins'}{os.pathsep}{REPO}",
        "EMBED_MODEL": "gte-small",
        "EMBED_MODEL_PATH": str(models),
        "EMBED_CACHE_DIR": str(tmp_path / "cache"),
        "EMBED_OFFLINE": "0",  # (the test session's default)
        "HF_HUB_OFFLINE": "0",
    }


def _watch(conn: Conn, table: str, model: str, rows: int) -> None:
    conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch(%s, 'body', model => %s)", (table, model))
    conn.execute(
        f"INSERT INTO {table} SELECT i, 'document number ' || i FROM generate_series(1, %s) i",
        (rows,),
    )


def _embedded(conn: Conn, table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table} WHERE embedding IS NOT NULL").fetchone()
    assert row is not None
    return int(row[0])


def _not_ready(worker: WorkerProcess) -> list[str]:
    status, problems = _readyz(worker)
    return problems if status == 503 else []


def _deferred_reason(conn: Conn, table: str) -> str | None:
    row = conn.execute(
        "SELECT deferred_reason FROM embeddings.status WHERE target_id ="
        " (SELECT id FROM embeddings.targets WHERE source = %s::regclass)",
        (table,),
    ).fetchone()
    return None if row is None else row[0]


def _readyz(worker: WorkerProcess) -> tuple[int, list[str]]:
    """/readyz's status and problems; 0 while it does not answer."""
    try:
        status, body = worker.get("/readyz")
    except OSError:
        return 0, []
    return status, json.loads(body).get("problems", []) if status != 200 else []


def test_a_first_use_download_holds_only_its_own_tables(
    conn: Conn,
    hub: FakeHub,
    downloading_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    _watch(conn, "served", MINILM, 5)
    _watch(conn, "waiting", "gte-small", 3)

    worker = start_worker(**downloading_env)

    wait_for(lambda: hub.content_started(MODEL_FILE), 60, what="the weights' transfer")
    wait_for(lambda: _embedded(conn, "served") == 5, 60, what="the MiniLM table served")
    problems = wait_for(lambda: _not_ready(worker), 30, what="/readyz answering 503")
    assert any(p.startswith("model gte-small: downloading Supabase/gte-small") for p in problems)
    assert _embedded(conn, "waiting") == 0
    held = wait_for(lambda: _deferred_reason(conn, "waiting"), 30, what="the table's jobs held")
    assert "downloading Supabase/gte-small" in str(held)

    hub.release()  # the transfer completes: the model loads, its table's held jobs are taken

    wait_for(lambda: _embedded(conn, "waiting") == 3, 60, what="the gte-small table served")
    wait_for(lambda: _readyz(worker)[0] == 200, 30, what="/readyz ready")


def test_sigterm_does_not_wait_for_a_download(
    conn: Conn,
    hub: FakeHub,
    downloading_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    _watch(conn, "waiting", "gte-small", 3)
    worker = start_worker(**downloading_env)
    wait_for(lambda: hub.content_started(MODEL_FILE), 60, what="the weights' transfer")
    wait_for(lambda: _readyz(worker)[0] == 503, 30, what="/readyz answering")

    started = time.monotonic()
    worker.signal(signal.SIGTERM)
    code = worker.wait_exit(timeout=20)

    assert code == 0, worker.log_text()[-3000:]
    assert time.monotonic() - started < 10
    cache = tmp_path / "cache"
    assert not (cache / "gte-small").exists()
    leftovers = [p.name for p in cache.iterdir() if p.name.startswith(".gte-small.")]
    assert leftovers == []


# --- the commands -------------------------------------------------------------------------------


def _command(env: dict[str, str], *argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "worker", *argv],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_killed_model_download_leaves_nothing_once_run_again(
    hub: FakeHub, downloading_env: dict[str, str], tmp_path: Path
) -> None:
    """kill -9 mid-transfer: its staging directory stayed in the cache for good."""
    killed = _command(downloading_env, "model", "download", "gte-small")
    wait_for(lambda: hub.content_started(MODEL_FILE), 60, what="the weights' transfer")
    killed.kill()
    killed.communicate(timeout=30)
    cache = tmp_path / "cache"
    assert [p for p in cache.iterdir() if p.name.startswith(".gte-small.")] != []

    hub.release()
    again = _command(downloading_env, "model", "download", "gte-small")
    _, err = again.communicate(timeout=120)

    assert again.returncode == 0, err
    assert [p.name for p in cache.iterdir() if p.name.startswith(".gte-small.")] == []
    assert (cache / "gte-small" / MODEL_FILE).is_file()


def test_a_cut_transfer_says_so_once_and_quietly(
    hub: FakeHub, downloading_env: dict[str, str]
) -> None:
    """A transfer cut short: the message said "On a machine without access to the hub" (it was
    reached), huggingface_hub's retry warnings came out twice, and every HTTP request was an INFO
    line."""
    hub.cut_off("Supabase/gte-small", MODEL_FILE)

    command = _command(downloading_env, "model", "download", "gte-small")
    _, err = command.communicate(timeout=120)

    assert command.returncode == 1, err
    assert f"the transfer of {MODEL_FILE} from {hub.endpoint} failed" in err
    assert "without access to the hub" not in err
    assert "HTTP Request:" not in err
    retries = [line for line in err.splitlines() if "Error while downloading" in line]
    assert retries and all(line.startswith("20") for line in retries), err  # ours: timestamped


def test_embed_says_it_downloads_on_first_use(
    hub: FakeHub, downloading_env: dict[str, str]
) -> None:
    hub.release()

    command = _command(downloading_env, "embed", "hello world")
    out, err = command.communicate(timeout=120)

    assert command.returncode == 0, err
    assert len(json.loads(out)[0]) == 384
    assert "model gte-small is not on this machine: downloading Supabase/gte-small" in err
