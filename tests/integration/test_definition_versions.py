"""A target redefined by watch() while the worker drains (issue 12, item 3): no vector of the
old definition is written or acknowledged once the new one is committed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import psycopg
import pytest

from tests.integration.conftest import TINY_DIMS
from tests.support import stores
from tests.support.in_flight import InFlight, backfill_lane
from tests.support.jobs import messages
from worker import db
from worker.config import Settings
from worker.models.loaded import LoadedModels
from worker.pipeline import jobs as jobqueue
from worker.pipeline import stages, write
from worker.pipeline.targets import TargetRegistry
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]

TEXTS = {1: "alpha beta gamma", 2: "the quick brown fox", 3: "a third sentence"}


def make_docs(conn: Conn, model: str) -> None:
    stores.texts_table(
        conn, TEXTS, f"id bigint PRIMARY KEY, body text, embedding halfvec({TINY_DIMS})"
    )
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (model,))


def assert_vectors_of(conn: Conn, embedders: LoadedModels, model: str) -> None:
    rows = conn.execute("SELECT id, body, embedding::real[] FROM docs ORDER BY id").fetchall()
    expected = embedders.get(model).embed([body for _, body, _ in rows])
    for (key, _, stored), want in zip(rows, expected, strict=True):
        assert stored is not None, f"row {key} has no vector"
        assert np.allclose(np.array(stored, dtype=np.float32), want, atol=2e-3), (
            f"row {key} does not hold {model}'s vector"
        )


def assert_handed_back_unspent(conn: Conn, msg_ids: list[int]) -> None:
    """The jobs are visible again at once, and the attempt was not counted."""
    released = conn.execute(
        "SELECT read_ct, vt <= clock_timestamp() FROM pgmq.q_embedding_jobs_backfill"
        " WHERE msg_id = ANY(%s)",
        (msg_ids,),
    ).fetchall()
    assert released and all(row == (0, True) for row in released)


def drain(
    conn: db.Connection, registry: TargetRegistry, settings: Settings, embedders: LoadedModels
) -> None:
    """Both lanes, then the model change completes (what `run --once` does)."""
    queues = [
        jobqueue.Queue(settings.queue),
        backfill_lane(settings),
    ]
    while True:
        for queue in queues:
            while (batch := stages.read(conn, queue, registry, settings)) is not None:
                stages.load(conn, batch, embedders)
                stages.embed(embedders, batch)
                write.write(conn, queue, batch, settings)
        results = conn.execute(
            "SELECT result FROM embeddings_internal.complete_changes()"
        ).fetchall()
        if not any(r == "done" or r.endswith("the new vector: queued") for (r,) in results):
            return


def test_a_registry_cached_before_a_rewatch_is_not_used_after_it(
    conn: Conn, dsn: str, tiny_models: tuple[str, str], settings: Settings, embedders: LoadedModels
) -> None:
    first, second = tiny_models
    make_docs(conn, first)
    registry = (
        TargetRegistry()
    )  # one worker's registry, kept across batches (it caches for a minute)
    with db.connect(dsn) as worker_conn:
        db.register_vector_types(worker_conn)
        drain(worker_conn, registry, settings, embedders)
        assert_vectors_of(conn, embedders, first)

        conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (second,))
        drain(worker_conn, registry, settings, embedders)

    assert_vectors_of(conn, embedders, second)
    assert messages(conn) == []


def test_a_batch_read_before_a_rewatch_is_not_written_and_is_redone(
    conn: Conn, tiny_models: tuple[str, str], in_flight: InFlight, run_once: Callable[..., Worker]
) -> None:
    first, second = tiny_models
    make_docs(conn, first)
    embedders, settings = in_flight.embedders, in_flight.settings
    with in_flight.read() as (worker_conn, queue, batch):
        stages.load(worker_conn, batch, embedders)
        stages.embed(embedders, batch)  # with the first model

        conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (second,))
        settlement = write.write(worker_conn, queue, batch, settings)

    assert settlement.delete == []
    assert sorted(settlement.release) == sorted(batch.msg_ids)
    assert conn.execute("SELECT count(embedding) FROM docs").fetchone() == (0,)
    assert_handed_back_unspent(conn, batch.msg_ids)

    run_once()
    assert_vectors_of(conn, embedders, second)
    assert messages(conn) == []


def test_watch_bumps_the_version_only_when_the_definition_changes(
    conn: Conn, tiny_models: tuple[str, str]
) -> None:
    first, second = tiny_models
    make_docs(conn, first)
    version = "SELECT version FROM embeddings.targets"
    assert conn.execute(version).fetchone() == (1,)
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (first,))
    assert conn.execute(version).fetchone() == (1,)  # the same definition
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (second,))
    assert conn.execute(version).fetchone() == (2,)


def test_watch_waits_for_a_write_in_progress_and_later_writes_see_its_version(
    conn: Conn, dsn: str, tiny_models: tuple[str, str]
) -> None:
    first, second = tiny_models
    make_docs(conn, first)
    lock = "SELECT embeddings_internal.lock_target_version(id) FROM embeddings.targets"
    with psycopg.connect(dsn) as writer:  # a write transaction, as the worker's
        assert writer.execute(lock).fetchone() == (1,)
        conn.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (second,))
        writer.commit()
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (second,))
    with psycopg.connect(dsn) as writer:
        assert writer.execute(lock).fetchone() == (2,)


@pytest.mark.parametrize(
    ("ddl", "table", "vec"),
    [
        ("ALTER TABLE docs RENAME COLUMN body TO content", "docs", "embedding"),
        ("ALTER TABLE docs RENAME COLUMN embedding TO vec", "docs", "vec"),
        ("ALTER TABLE docs RENAME TO papers", "papers", "embedding"),
    ],
)
@pytest.mark.parametrize("when", ["before the load", "before the write"])
def test_a_batch_read_before_a_rename_is_handed_back_without_spending_an_attempt(
    conn: Conn,
    tiny_models: tuple[str, str],
    in_flight: InFlight,
    run_once: Callable[..., Worker],
    ddl: str,
    table: str,
    vec: str,
    when: str,
) -> None:
    first, _ = tiny_models
    make_docs(conn, first)
    embedders, settings = in_flight.embedders, in_flight.settings
    with in_flight.read() as (worker_conn, queue, batch):
        if when == "before the load":
            conn.execute(ddl)
        stages.load(worker_conn, batch, embedders)
        stages.embed(embedders, batch)  # under the old names
        if when == "before the write":
            conn.execute(ddl)
        settlement = write.write(worker_conn, queue, batch, settings)

    assert sorted(settlement.release) == sorted(batch.msg_ids)
    assert not settlement.retry and not settlement.dead
    assert_handed_back_unspent(conn, batch.msg_ids)

    run_once()
    assert conn.execute(f"SELECT count({vec}) FROM {table}").fetchone() == (len(TEXTS),)
    assert messages(conn) == []


def test_a_target_deferred_when_read_and_mended_before_the_write_is_handed_back_not_held(
    conn: Conn, tiny_models: tuple[str, str], in_flight: InFlight
) -> None:
    """QA 5a: a batch read while the content column was jsonb defers its target; the column
    made text again before the batch was written (its worker busy with other rows), its jobs
    were still held for a minute, and status said why with the reason already gone. The
    deferral decided at the read is checked against the definition at the write."""
    make_docs(conn, tiny_models[0])
    conn.execute("ALTER TABLE docs ALTER COLUMN body TYPE jsonb USING to_jsonb(body)")
    with in_flight.read() as (worker_conn, queue, batch):
        stages.load(worker_conn, batch, in_flight.embedders)
        assert "has type jsonb" in "".join(batch.deferred.values()), batch.deferred
        conn.execute("ALTER TABLE docs ALTER COLUMN body TYPE text USING body #>> '{}'")
        stages.embed(in_flight.embedders, batch)
        write.write(worker_conn, queue, batch, in_flight.settings)

    assert_handed_back_unspent(conn, [job.msg_id for job in batch.jobs])
    assert conn.execute("SELECT state FROM embeddings.stopped").fetchall() == []
    assert batch.deferred == {}  # (nor does its log line say it was deferred)
