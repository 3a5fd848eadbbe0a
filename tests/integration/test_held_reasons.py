"""Why a target's jobs are held is the reason of the worker that holds them now: a worker that
cannot load a model records its own reason for the held jobs it finds (worker/process/held.py),
and `run --once` says its own reason on its way out (worker/process/unserved.py), not one
another run stored."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support import stores
from tests.support.in_flight import in_process_worker, join_threads
from worker import config, exits
from worker.config import Settings
from worker.models.loaded import LoadedModels

Conn = psycopg.Connection[Any]


def run_once_with(settings: Settings, caplog: pytest.LogCaptureFixture, **overrides: Any) -> str:
    """`run --once` as a new process would run it with `overrides` (nothing loaded, no failure
    remembered); returns the line it left with (it exits 3: jobs held)."""
    settings = settings.with_overrides(**overrides)
    fresh = LoadedModels(
        location=settings.model_location,
        downloads=settings.downloads,
        api_key=config.api_key_from_env,
        threads=2,
    )
    caplog.clear()
    worker = in_process_worker(settings, fresh, once=True)
    code = worker.run()
    join_threads(worker)
    assert code == exits.UNSERVED
    (left,) = [r.getMessage() for r in caplog.records if "run --once left" in r.getMessage()]
    return left


def test_a_run_that_fails_otherwise_says_its_own_reason_not_the_one_before(
    conn: Conn, settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The first run cannot find the model anywhere and holds its jobs. The second finds a
    directory of that name that is not a model, and cannot load it either: the jobs still wait
    out the first run's minute, so it never reads them. status and its exit line gave the first
    run's reason (nowhere to be found), and an operator looked for the wrong cause."""
    caplog.set_level(logging.INFO)
    stores.watch_absent_model(conn, "(1, 'hello'), (2, 'world')")
    first = run_once_with(settings, caplog, offline=True)
    assert "absent-model" in first and "not a model directory" not in first, first
    (before,) = conn.execute("SELECT deferred_reason FROM embeddings.status").fetchone() or ("",)
    assert "not a model directory" not in before

    broken = tmp_path / "absent-model"
    broken.mkdir()
    (broken / "model.onnx").write_bytes(b"not a model")
    second = run_once_with(
        settings, caplog, offline=True, model_path=f"{tmp_path}:{settings.model_path}"
    )
    assert "public.docs.embedding: 2 job(s), " in second, second
    assert "not a model directory" in second, second
    (reason,) = conn.execute("SELECT deferred_reason FROM embeddings.status").fetchone() or ("",)
    assert "not a model directory" in reason, reason
    assert reason != before
