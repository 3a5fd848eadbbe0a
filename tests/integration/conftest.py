"""Fixtures for tests that run the pipeline in-process against a real database."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support import modelgen
from tests.support.models import MINILM, require_minilm, shared_models_dir
from worker.config import Settings
from worker.models.loaded import LoadedModels
from worker.process.runner import Worker


@pytest.fixture(scope="session")
def embedders() -> LoadedModels:
    """Loaded models shared by the session (loading is the slow part)."""
    return LoadedModels(threads=2)


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
def run_once(settings: Settings, embedders: LoadedModels) -> Iterator[Callable[..., Worker]]:
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


# Two random-weight models of the same dimension: a target can switch between them, and their
# vectors for one text differ completely. Built once into pytest's cache directory.
TINY_MODELS = ("tiny-a", "tiny-b")
TINY_DIMS = modelgen.TINY["hidden"]


@pytest.fixture(scope="session")
def tiny_model_paths(request: pytest.FixtureRequest) -> str:
    """EMBED_MODEL_PATH entries that hold the models named TINY_MODELS."""
    cache = getattr(request.config, "cache", None)
    root = (
        Path(cache.mkdir("embed-worker-models"))
        if cache is not None
        else Path(request.getfixturevalue("tmp_path_factory").mktemp("models"))
    )
    tokenizer = shared_models_dir() / "gte-small"
    if not (tokenizer / "tokenizer.json").is_file():
        pytest.skip(f"the gte-small tokenizer is not at {tokenizer}")
    dirs = [
        modelgen.cached_model_dir(
            root, name=name, tokenizer_dir=tokenizer, seed=seed, pooling="mean", **modelgen.TINY
        )
        for seed, name in enumerate(TINY_MODELS, start=1)
    ]
    return os.pathsep.join(str(d.parent) for d in dirs)


@pytest.fixture
def tiny_models(
    conn: psycopg.Connection[Any],
    tiny_model_paths: str,
    minilm: str,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[str, str]:
    """The two tiny models, findable by name (beside MiniLM) and registered in the database."""
    monkeypatch.setenv(
        "EMBED_MODEL_PATH", os.pathsep.join([tiny_model_paths, os.environ["EMBED_MODEL_PATH"]])
    )
    for name in TINY_MODELS:
        conn.execute(
            "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
            " VALUES (%s, %s, 512, 'mean')",
            (name, TINY_DIMS),
        )
    return TINY_MODELS


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Prints the fault matrix when the fault-injection harness ran, and keeps it in the cache."""
    from tests.support import faultmatrix

    if not faultmatrix.RESULTS and not faultmatrix.SCHEMA_CHANGES:
        return
    terminalreporter.section("fault matrix (rows lost / stale / left queued, per cell)")
    if faultmatrix.RESULTS:
        terminalreporter.write_line(faultmatrix.render())
    if faultmatrix.SCHEMA_CHANGES:
        terminalreporter.write_line("")
        terminalreporter.write_line(faultmatrix.render_schema_changes())
    cache = getattr(config, "cache", None)
    if cache is not None:
        cache.set("embed-worker/fault-matrix", faultmatrix.as_json())
