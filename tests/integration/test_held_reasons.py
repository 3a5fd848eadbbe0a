"""Why a target's jobs are held is the reason of the worker that holds them now: a worker that
cannot load a model records its own reason for the held jobs it finds (worker/process/held.py),
and `run --once` says its own reason on its way out (worker/process/unserved.py), not one
another run stored."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support import stores
from tests.support.in_flight import in_process_worker, join_threads
from worker import config, db, exceptions, exits
from worker.config import Settings
from worker.models.download import DownloadPolicy
from worker.models.files import ModelLocation
from worker.models.loaded import LoadedModels
from worker.pipeline.lanes import Lanes
from worker.pipeline.targets import TargetRegistry
from worker.process.held import HeldJobs

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


def test_a_worker_records_its_reason_for_held_jobs_again_when_it_changes(
    conn: Conn, dsn: str, settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The keeper's round (HeldJobs.release) records the worker's reason for the targets whose
    jobs are held, at its first round and whenever the reason changes; a target with no job
    held gets no record (status and the stopped state `held` would say jobs wait)."""
    caplog.set_level(logging.INFO)
    stores.watch_absent_model(conn, "(1, 'hello'), (2, 'world')")
    stores.watched_table(conn, "absent-model", "SELECT 1, NULL WHERE false", table="notes")
    run_once_with(settings, caplog, offline=True)  # (holds the jobs of docs)
    models = LoadedModels(
        location=ModelLocation.of(str(tmp_path), tmp_path / "cache"),
        downloads=DownloadPolicy(off_by="EMBED_OFFLINE"),
        api_key=config.api_key_from_env,
        retry_after=0,
    )
    registry = TargetRegistry()
    broken = tmp_path / "absent-model"
    with db.connect(dsn) as worker_conn:
        registry.refresh(worker_conn)
        held = HeldJobs("embedding_jobs", Lanes("embedding_jobs", 64), registry, models)
        for fail in ("not a model directory", f"looked in {tmp_path}"):
            if fail == "not a model directory":
                broken.mkdir()
                (broken / "model.onnx").write_bytes(b"not a model")
            else:
                shutil.rmtree(broken)
            with pytest.raises(exceptions.ModelError, match=fail):
                models.get("absent-model")
            held.release(worker_conn)
            rows = conn.execute("SELECT target_id, reason, jobs FROM embeddings.deferrals")
            ((_, reason, jobs),) = rows.fetchall()  # (docs only: notes holds no job)
            assert fail in reason and jobs > 0, reason
