"""Held jobs (worker/process/held.py): what defer_jobs marks held for its target, and only that,
is what release_held_jobs makes visible; never a job a worker leased since."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from tests.support.in_flight import in_process_worker
from worker import config, db, exits
from worker.config import Settings
from worker.models.loaded import LoadedModels
from worker.pipeline import jobs as jobqueue
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]
QUEUE = "embedding_jobs"


def visible(conn: Conn) -> set[int]:
    rows = conn.execute(f"SELECT msg_id FROM pgmq.q_{QUEUE} WHERE vt <= clock_timestamp()")
    return {int(r[0]) for r in rows}


def test_only_jobs_still_held_for_the_target_are_released(dsn: str) -> None:
    with db.connect(dsn) as conn:
        conn.execute(f"SELECT pgmq.create('{QUEUE}')")
        ids = [
            int(r[0])
            for r in conn.execute(
                "SELECT pgmq.send(%s, jsonb_build_object('target', t, 'keys', jsonb_build_array(1)))"
                " FROM unnest(ARRAY[1, 1, 1, 2]) AS t",
                (QUEUE,),
            )
        ]
        held_1, leased_1, plain_1, held_2 = ids
        queue = jobqueue.Queue(QUEUE)
        queue.defer(conn, {held_1: 1, leased_1: 1, held_2: 2}, 60)
        conn.execute(
            f"UPDATE pgmq.q_{QUEUE} SET vt = clock_timestamp() + interval '60 s' WHERE msg_id = %s",
            (plain_1,),
        )  # another's lease, never held
        conn.execute("SELECT pgmq.set_vt(%s, %s, 30)", (QUEUE, leased_1))  # leased since
        assert visible(conn) == set()

        assert queue.release_held(conn, [1]) == 1
        assert visible(conn) == {held_1}
        assert queue.release_held(conn, [1]) == 0  # released once
        assert queue.release_held(conn, [2]) == 1
        assert visible(conn) == {held_1, held_2}


def held_jobs(conn: Conn) -> list[tuple[Any, ...]]:
    """The held jobs of both lanes as they are: id, visibility, reads, what holds them."""
    found = []
    for lane in (QUEUE, f"{QUEUE}_backfill"):  # (a change's jobs are backfill)
        rows = conn.execute(
            f"SELECT %s, msg_id, vt, read_ct, message -> 'held' FROM pgmq.q_{lane}"
            " WHERE message ? 'held' ORDER BY msg_id",
            (lane,),
        )
        found += [tuple(r) for r in rows]
    return found


def test_a_start_leaves_held_the_jobs_of_a_change_to_a_model_it_cannot_load(
    conn: Conn,
    tiny_models: tuple[str, str],
    run_once: Callable[..., Worker],
    settings: Settings,
    embedders: LoadedModels,
) -> None:
    """The change's jobs are held for a model this worker cannot load. Its start-up released
    them (the target's own model loads), only for its first batch to hold them again: every
    start moved them, and held_jobs and the metrics flickered."""
    model = tiny_models[0]
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs SELECT i, 'document ' || i FROM generate_series(1, 5) i")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (model,))
    run_once(model=model)
    conn.execute(
        "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
        " VALUES ('absent-model', 32, 512, 'mean')"
    )
    conn.execute("SELECT embeddings.rewatch('docs', model => 'absent-model')")
    run_once(model=model, expect=exits.UNSERVED)  # holds the change's jobs
    before = held_jobs(conn)
    assert before, "the change's jobs were not held"

    # A start of its own (nothing loaded, no failure remembered), as a new process's
    fresh = LoadedModels(
        location=embedders.location,
        downloads=embedders.downloads,
        api_key=config.api_key_from_env,
        threads=embedders.threads,
    )
    assert in_process_worker(settings, fresh, once=True, model=model).run() == exits.UNSERVED
    assert held_jobs(conn) == before
