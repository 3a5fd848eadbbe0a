"""Fixtures for tests that run the pipeline in-process against a real database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.models import MINILM, require_minilm
from worker.config import Settings
from worker.embedders import Embedders
from worker.runner import Worker


@pytest.fixture(scope="session")
def embedders() -> Embedders:
    """Loaded models shared by the session (loading is the slow part)."""
    return Embedders(threads=2)


@pytest.fixture
def minilm(monkeypatch: pytest.MonkeyPatch) -> str:
    path = require_minilm()
    monkeypatch.setenv("EMBED_MODEL_PATH", str(path.parent))
    return MINILM


@pytest.fixture
def settings(dsn: str, minilm: str) -> Settings:
    return Settings(
        database_url=dsn,
        model=minilm,
        batch_size=64,
        max_attempts=3,
        backoff_base_seconds=0.01,  # retries become visible at once: tests need not wait
        vt_seconds=30,
    )


@pytest.fixture
def run_once(settings: Settings, embedders: Embedders) -> Iterator[Callable[..., Worker]]:
    """Runs `embed-worker run --once` in-process; returns the finished Worker."""

    def run(**overrides: Any) -> Worker:
        worker = Worker(
            settings.with_overrides(**overrides),
            once=True,
            embedders=embedders,
            progress=False,
            handle_signals=False,
        )
        assert worker.run() == 0
        return worker

    yield run
