"""Acceptance tests run the real `embed-worker` process and send it real signals."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests.support import wheel as wheellib
from tests.support.models import MINILM, require_minilm
from tests.support.process import WorkerProcess


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout's wheel, built once per session (the wheel test and the image use it)."""
    return wheellib.build(tmp_path_factory.mktemp("dist"))


@pytest.fixture
def worker_env() -> dict[str, str]:
    path = require_minilm()
    return {
        "EMBED_MODEL": MINILM,
        "EMBED_MODEL_PATH": str(path.parent),
        "EMBED_THREADS": "1",
        "EMBED_BATCH_SIZE": "32",
    }


@pytest.fixture
def worker_dsn(dsn: str) -> Iterator[str]:
    """The database as a least-privilege worker role (embeddings.grant_worker): every
    acceptance test runs the worker the way the README tells operators to."""
    role = f"embed_worker_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute("SELECT embeddings.grant_worker(%s)", (role,))
    yield make_conninfo(dsn, user=role)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE {role}")


@pytest.fixture
def start_worker(
    worker_dsn: str, worker_env: dict[str, str]
) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(*args: str, http: bool = True, **env: Any) -> WorkerProcess:
        overrides = {k: str(v) for k, v in env.items()}
        process = WorkerProcess(worker_dsn, {**worker_env, **overrides}, *args, http=http)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
