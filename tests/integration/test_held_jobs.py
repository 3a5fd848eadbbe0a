"""Held jobs (worker/process/held.py): what defer_jobs marks held for its target, and only that,
is what release_held_jobs makes visible; never a job a worker leased, retried or released since.
It finds them with pgmq's vt index, never reading the visible backlog of the lane."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
import psycopg.sql

from tests.support.fetch import fetch_value
from tests.support.in_flight import in_process_worker
from worker import config, db, exits, queries
from worker.config import Settings
from worker.models.loaded import LoadedModels
from worker.pipeline import jobs as jobqueue
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]
QUEUE = "embedding_jobs"


def visible(conn: Conn) -> set[int]:
    rows = conn.execute(f"SELECT msg_id FROM pgmq.q_{QUEUE} WHERE vt <= clock_timestamp()")
    return {int(r[0]) for r in rows}


def send(conn: Conn, targets: list[int]) -> list[int]:
    """One job of one key for each target of `targets`, visible now; their ids."""
    rows = conn.execute(
        "SELECT pgmq.send(%s, jsonb_build_object('target', t, 'keys', jsonb_build_array(1)))"
        " FROM unnest(%s::integer[]) WITH ORDINALITY AS s(t, n) ORDER BY n",
        (QUEUE, targets),
    )
    return [int(r[0]) for r in rows]


def test_only_jobs_still_held_for_the_target_are_released(dsn: str) -> None:
    with db.connect(dsn) as conn:
        conn.execute(f"SELECT pgmq.create('{QUEUE}')")
        ids = send(conn, [1, 1, 1, 1, 1, 1, 2, 3])
        held_1, leased_1, plain_1, retried_1, released_1, lapsed_1, held_2, held_3 = ids
        queue = jobqueue.Queue(QUEUE)
        queue.defer(conn, {m: 1 for m in (held_1, leased_1, retried_1, released_1)}, 60)
        queue.defer(conn, {held_2: 2, held_3: 3}, 60)
        queue.defer(conn, {lapsed_1: 1}, 0)  # held, and its wait over: visible already
        conn.execute(
            f"UPDATE pgmq.q_{QUEUE} SET vt = clock_timestamp() + interval '60 s' WHERE msg_id = %s",
            (plain_1,),
        )  # another's lease, never held
        conn.execute("SELECT pgmq.set_vt(%s, %s, 30)", (QUEUE, leased_1))  # leased since
        queue.retry(conn, {retried_1: 120}, {retried_1: "failed"})  # retried since
        vt = fetch_value(conn, f"SELECT vt FROM pgmq.q_{QUEUE} WHERE msg_id = %s", (released_1,))
        assert queue.release(conn, {released_1: vt}) == 1  # released since: visible
        assert visible(conn) == {lapsed_1, released_1}

        assert queue.release_held(conn, [1]) == 1
        assert visible(conn) == {held_1, lapsed_1, released_1}
        assert queue.release_held(conn, [1]) == 0  # released once
        assert queue.release_held(conn, [2, 3]) == 2
        assert visible(conn) == {held_1, lapsed_1, released_1, held_2, held_3}
        # the others are as they were: still waiting, their messages untouched
        waiting = conn.execute(
            f"SELECT msg_id, message ->> 'last_error' FROM pgmq.q_{QUEUE}"
            " WHERE vt > clock_timestamp() ORDER BY msg_id"
        ).fetchall()
        assert waiting == [(leased_1, None), (plain_1, None), (retried_1, "failed")]


def rows_read(plan: dict[str, Any], relation: str) -> int:
    """The rows the scans of `relation` in `plan` looked at: those they returned and those their
    filters dropped."""
    own = 0
    if plan.get("Relation Name") == relation and plan["Node Type"].endswith("Scan"):
        own = sum(
            int(plan.get(k, 0))
            for k in ("Actual Rows", "Rows Removed by Filter", "Rows Removed by Index Recheck")
        )
    return own + sum(rows_read(p, relation) for p in plan.get("Plans", []))


def test_the_release_reads_the_jobs_not_visible_by_the_vt_index(dsn: str) -> None:
    """A worker releases a target's held jobs when the target becomes servable to it, however
    long the lane's backlog. With clock_timestamp() in its condition (volatile: no index can
    serve it) the statement read every visible job of the lane (200k visible and 20k held or
    leased: 100-160 ms a call); the time of the statement, which the planner knows, lets the
    vt index find the jobs not visible alone. Sequential scans made as dear as Postgres makes
    them: the index is used where it can be."""
    with db.connect(dsn) as conn:
        conn.execute(f"SELECT pgmq.create('{QUEUE}')")
        backlog = send(conn, [1, 2] * 1000)
        held = send(conn, [1, 1, 2])
        queue = jobqueue.Queue(QUEUE)
        queue.defer(conn, dict(zip(held, [1, 1, 2], strict=True)), 60)
        conn.execute(f"ANALYZE pgmq.q_{QUEUE}")
        assert len(visible(conn)) == len(backlog)
        conn.execute("SET enable_seqscan = off")
        with conn.transaction(force_rollback=True):
            explained = fetch_value(
                conn,
                psycopg.sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ")
                + queries.compose("release_held_jobs", queue_table=queue.table),
                {"target_ids": [1]},
            )
        conn.execute("RESET enable_seqscan")
        plan = explained[0]["Plan"]
        assert rows_read(plan, f"q_{QUEUE}") <= len(held), json.dumps(plan, indent=1)
        assert queue.release_held(conn, [1]) == 2
        assert visible(conn) == set(backlog) | set(held[:2])


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
