"""Acceptance tests run the real `embed-worker` process and send it real signals."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.models import MINILM, require_minilm
from tests.support.process import WorkerProcess


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
def start_worker(dsn: str, worker_env: dict[str, str]) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(*args: str, http: bool = True, **env: Any) -> WorkerProcess:
        process = WorkerProcess(
            dsn, {**worker_env, **{k: str(v) for k, v in env.items()}}, *args, http=http
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
