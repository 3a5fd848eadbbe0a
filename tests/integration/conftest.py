"""Fixtures for tests that run the pipeline in-process against a real database."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support import modelgen
from tests.support.fault_scenario import Scenario
from tests.support.in_flight import InFlight, in_process_worker, join_threads, stop_worker
from tests.support.models import (
    MINILM,
    gte_tokenizer,
    require_gte_tokenizer,
    require_minilm,
    shared_models_dir,
    tiny_reranker_dir,
)
from worker import config, exits
from worker.config import Settings
from worker.models.embedder import Embedder
from worker.models.loaded import LoadedModels
from worker.process.runner import Worker

# Random-weight models, built once into pytest's cache directory: two of the same dimension (a
# target can switch between them, and their vectors for one text differ completely) and one of
# another dimension. name -> (seed, extra generator parameters)
TINY_MODELS = ("tiny-a", "tiny-b")
TINY_DIMS = modelgen.TINY["hidden"]
WIDE = "tiny-wide"
WIDE_DIMS = 48
GENERATED: dict[str, tuple[int, dict[str, Any]]] = {
    "tiny-a": (1, {}),
    "tiny-b": (2, {}),
    WIDE: (7, {"hidden": WIDE_DIMS, "heads": 2, "intermediate": 96}),
}


@pytest.fixture(scope="session")
def generated_model_path(generated_models_root: Path) -> str:
    """EMBED_MODEL_PATH entries holding the GENERATED models; "" without the gte-small
    tokenizer to build them (the tests that need them skip)."""
    tokenizer = gte_tokenizer()
    if tokenizer is None:
        return ""
    dirs = [
        modelgen.cached_model_dir(
            generated_models_root,
            name=name,
            tokenizer_dir=tokenizer,
            seed=seed,
            pooling="mean",
            **{**modelgen.TINY, **params},
        )
        for name, (seed, params) in GENERATED.items()
    ]
    dirs.append(tiny_reranker_dir(generated_models_root, tokenizer))
    return os.pathsep.join(str(d.parent) for d in dirs)


@pytest.fixture(scope="session")
def tiny_model_paths(generated_model_path: str) -> str:
    """EMBED_MODEL_PATH entries holding the generated models, or skip saying why."""
    if not generated_model_path:
        require_gte_tokenizer()
    return generated_model_path


@pytest.fixture(scope="session")
def model_path(generated_model_path: str) -> str:
    """EMBED_MODEL_PATH of the in-process workers and the CLI subprocesses: the shared real
    models, then the generated ones."""
    return os.pathsep.join(p for p in (str(shared_models_dir()), generated_model_path) if p)


@pytest.fixture(scope="session")
def embedders(model_path: str) -> LoadedModels:
    """Loaded models shared by the session (loading is the slow part); never downloads."""
    settings = Settings(model_path=model_path, offline=True)
    # Keys by the environment at each request: tests set and unset them.
    return LoadedModels(
        location=settings.model_location,
        downloads=settings.downloads,
        api_key=config.api_key_from_env,
        threads=2,
    )


@pytest.fixture
def minilm(monkeypatch: pytest.MonkeyPatch, model_path: str) -> str:
    require_minilm()
    monkeypatch.setenv("EMBED_MODEL_PATH", model_path)  # for the CLI in subprocesses
    return MINILM


def case_settings(dsn: str, model: str, model_path: str) -> Settings:
    """The in-process worker's settings in the tests (`settings`)."""
    return Settings(
        database_url=dsn,
        model=model,
        model_path=model_path,
        batch_size=64,
        max_attempts=3,
        backoff_base_seconds=0.01,  # retries become visible at once: tests need not wait
        vt_seconds=30,
    )


@pytest.fixture
def settings(dsn: str, minilm: str, model_path: str) -> Settings:
    return case_settings(dsn, minilm, model_path)


@pytest.fixture
def admin(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A second autocommit connection to the test's database: the application, or the DBA,
    acting while the worker holds its own."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection


@pytest.fixture
def in_flight(settings: Settings, dsn: str, embedders: LoadedModels) -> InFlight:
    """A batch taken through the stages by hand (tests/support/in_flight.py)."""
    return InFlight(settings, dsn, embedders)


@pytest.fixture
def fault_scenario(
    conn: psycopg.Connection[Any],
    settings: Settings,
    embedders: LoadedModels,
    tiny_models: tuple[str, str],
) -> Scenario:
    """The fault matrices' scenario (tests/support/fault_scenario.py), with the tiny model."""
    return Scenario.of(conn, settings, embedders, tiny_models[0])


@pytest.fixture
def role(conn: psycopg.Connection[Any]) -> Iterator[str]:
    """A role of the test's own (roles are the cluster's, not the database's: a name no other
    test takes), without LOGIN, dropped with what it was granted afterwards."""
    name = f"someone_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {name}")
    yield name
    conn.execute(f"DROP OWNED BY {name}")
    conn.execute(f"DROP ROLE {name}")


@pytest.fixture
def run_once(settings: Settings, embedders: LoadedModels) -> Iterator[Callable[..., Worker]]:
    """Runs `embed-worker run --once` in-process; returns the finished Worker. `expect`: its
    exit code, or the codes it may have (exits.UNSERVED where the run leaves held jobs)."""

    def run(expect: int | tuple[int, ...] = exits.OK, **overrides: Any) -> Worker:
        worker = in_process_worker(settings, embedders, once=True, **overrides)
        code = worker.run()
        join_threads(worker)  # nothing of the run logs once the test moved on
        assert code in (expect if isinstance(expect, tuple) else (expect,)), code
        return worker

    yield run


@pytest.fixture
def tiny_models(
    conn: psycopg.Connection[Any], tiny_model_paths: str, minilm: str
) -> tuple[str, str]:
    """The two tiny models, findable by name (beside MiniLM) and registered in the database."""
    return register_tiny_models(conn)


def register_tiny_models(conn: psycopg.Connection[Any]) -> tuple[str, str]:
    """The two tiny models in the registry of `conn`'s database."""
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


@pytest.fixture
def embedded_texts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every text the local models embed from now on (`.clear()` it to start counting later)."""
    seen: list[str] = []
    original = Embedder.embed_with_stats

    def count(self: Embedder, texts: Any) -> Any:
        seen.extend(texts)
        return original(self, texts)

    monkeypatch.setattr(Embedder, "embed_with_stats", count)
    return seen


@dataclass
class Running:
    """An in-process worker (not --once) in a thread of the test."""

    worker: Worker
    thread: threading.Thread

    def stop(self) -> None:
        stop_worker(self.worker, self.thread)


@pytest.fixture
def running(settings: Settings, embedders: LoadedModels) -> Iterator[Callable[..., Running]]:
    """Starts an in-process worker (not --once) in a thread, with settings overridden as given;
    each is stopped at the end of the test (after the test's own sessions let go of what they
    held: their `with` blocks end first)."""
    started: list[Running] = []

    def start(**overrides: Any) -> Running:
        worker = in_process_worker(settings, embedders, **overrides)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        started.append(Running(worker, thread))
        assert worker.started.wait(60), "the worker did not start"
        return started[-1]

    yield start
    for run in started:
        if run.thread.is_alive():
            run.stop()
