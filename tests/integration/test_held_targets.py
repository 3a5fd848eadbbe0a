"""The targets a running worker cannot serve (worker/process/held.py), as /readyz's
deferred_targets shows them: known from the database's definitions, not only from a batch's."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.integration.conftest import TINY_DIMS
from worker import db
from worker.models.loaded import LoadedModels
from worker.pipeline.lanes import Lanes
from worker.pipeline.targets import TargetRegistry
from worker.process import held

Conn = psycopg.Connection[Any]


def test_an_idle_worker_learns_a_target_became_unservable(
    conn: Conn, dsn: str, tiny_models: tuple[str, str], embedders: LoadedModels
) -> None:
    """No job arrives after the content column is dropped, so no batch re-reads the targets:
    the keeper's round (HeldJobs.release) does, once they are stale."""
    model = tiny_models[0]
    embedders.get(model)
    conn.execute(
        f"CREATE TABLE docs (id int PRIMARY KEY, body text, embedding halfvec({TINY_DIMS}))"
    )
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (model,))
    registry = TargetRegistry(max_age=0)  # stale at once: a minute gone by
    jobs = held.HeldJobs("embedding_jobs", Lanes("embedding_jobs", 64), registry, embedders)
    with db.connect(dsn) as worker_conn:
        registry.refresh(worker_conn)
        jobs.release(worker_conn)
        assert held.unservable("embedding_jobs", registry, embedders) == {}

        conn.execute("ALTER TABLE docs DROP COLUMN body")
        jobs.release(worker_conn)

    unservable = held.unservable("embedding_jobs", registry, embedders)
    assert list(unservable) == ["public.docs.embedding"], unservable
