"""A fleet of workers of which only some can serve a target (a rolling deploy: a model change to
a model only the new hosts have). A worker that cannot serve holds the target's jobs; one that
can takes them whenever it has room, not only when the target becomes servable to it
(worker/process/held.py), and status keeps the holders' reason while their holds last.

Before the fix a worker that could serve took held jobs only on its own change to servable:
the others read the change's jobs faster than it, held them for a minute, again and again,
and a change of a few hundred rows crawled for minutes; and each of its batches erased the
reason the others recorded, so status, doctor and the metrics said nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg

from tests.integration.conftest import TINY_DIMS
from tests.support.fetch import fetch_value
from tests.support.in_flight import in_process_worker, run_in_thread, stop_worker
from tests.support.process import wait_for
from worker import config
from worker.config import Settings
from worker.models.loaded import LoadedModels
from worker.pipeline import jobs as jobqueue
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]
ROWS = 200
NEW = "tiny-copy"  # on the capable worker's EMBED_MODEL_PATH only


def fresh_models(settings: Settings) -> LoadedModels:
    """A worker's own models, found where its settings say (nothing loaded, no failure)."""
    return LoadedModels(
        location=settings.model_location,
        downloads=settings.downloads,
        api_key=config.api_key_from_env,
        threads=1,
    )


def model_copy(tmp_path: Path, tiny_model_paths: str, of: str) -> str:
    """A directory holding model `of` under the name NEW, for one worker's EMBED_MODEL_PATH."""
    (source,) = [
        Path(p) / of for p in tiny_model_paths.split(os.pathsep) if (Path(p) / of).is_dir()
    ]
    (tmp_path / NEW).symlink_to(source)
    return str(tmp_path)


def held_jobs(conn: Conn) -> int:
    """The jobs of the backfill lane held now (as defer_jobs marks them)."""
    return int(
        fetch_value(
            conn,
            "SELECT count(*) FROM pgmq.q_embedding_jobs_backfill"
            " WHERE vt > clock_timestamp()"
            "   AND message #> '{held,until}' = to_jsonb(extract(epoch FROM vt))",
        )
    )


def test_a_worker_that_can_serve_a_change_takes_what_the_others_hold(
    conn: Conn,
    settings: Settings,
    tiny_models: tuple[str, str],
    tiny_model_paths: str,
    tmp_path: Path,
    run_once: Callable[..., Any],
) -> None:
    old = tiny_models[0]
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute(
        "INSERT INTO docs SELECT i, 'document number ' || i FROM generate_series(1, %s) i",
        (ROWS,),
    )
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (old,))
    run_once(model=old)
    conn.execute(
        "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
        " VALUES (%s, %s, 512, 'mean')",
        (NEW, TINY_DIMS),
    )
    capable = settings.with_overrides(
        model=old,
        batch_size=16,
        model_path=f"{model_copy(tmp_path, tiny_model_paths, old)}{os.pathsep}{settings.model_path}",
    )
    unable = settings.with_overrides(model=old, batch_size=16, offline=True)
    with contextlib.ExitStack() as workers:
        for each in (capable, unable, unable):
            workers.enter_context(running_worker(each))
        change_completes(conn)
    assert fetch_value(conn, "SELECT count(embedding) FROM docs") == ROWS


def change_completes(conn: Conn) -> None:
    """The change to NEW, made while the workers run, completes well within the minute of a
    hold."""
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (NEW,))

    # Held for a minute each time: the change completes well before, taken by the capable one.
    wait_for(lambda: held_jobs(conn), timeout=30, what="a worker to hold some of its jobs")
    wait_for(
        lambda: (
            fetch_value(conn, "SELECT count(*) FROM embeddings.model_changes") == 0
            and fetch_value(conn, "SELECT model FROM embeddings.targets") == NEW
        ),
        timeout=40,
        what="the change to complete",
    )


@contextlib.contextmanager
def running_worker(settings: Settings) -> Iterator[Worker]:
    """A worker (not --once) of its own models and settings, on a thread, stopped after."""
    worker = in_process_worker(settings, fresh_models(settings))
    thread, _ = run_in_thread(worker)
    try:
        assert worker.started.wait(60), "the worker did not start"
        yield worker
    finally:
        stop_worker(worker, thread)


def test_a_worker_that_serves_a_target_leaves_the_reason_of_those_holding_its_jobs(
    conn: Conn, tiny_models: tuple[str, str]
) -> None:
    """A batch that served the target again forgets its deferral (clear_deferrals), but not
    while another worker's holds of its jobs last: the reason that worker recorded stays in
    status, doctor and the held gauge until they end."""
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    target_id = fetch_value(
        conn, "SELECT embeddings.watch('docs', 'body', model => %s)", (tiny_models[0],)
    )
    lane = jobqueue.Queue(
        jobqueue.backfill_queue_name("embedding_jobs"),
        lane=jobqueue.BACKFILL,
        home="embedding_jobs",
    )
    msg_id = fetch_value(
        conn,
        "SELECT * FROM pgmq.send(%s, jsonb_build_object('target', %s::int, 'keys', '[1]'::jsonb))",
        (lane.name, target_id),
    )
    why = "public.docs.embedding: model 'tiny-copy' cannot be loaded here"
    lane.defer(conn, {msg_id: target_id}, 60)  # held by a worker that cannot serve it
    conn.execute(
        "SELECT embeddings_internal.note_deferrals(ARRAY[%s::int], ARRAY[%s], ARRAY[1])",
        (target_id, why),
    )

    def told() -> tuple[Any, ...]:
        status = conn.execute("SELECT held_jobs, deferred_reason FROM embeddings.status")
        held = conn.execute("SELECT reason FROM embeddings.stopped WHERE state = 'held'")
        return (*(status.fetchone() or ()), *(r[0] for r in held))

    clear = "SELECT embeddings_internal.clear_deferrals(ARRAY[%s::int])"
    conn.execute(clear, (target_id,))  # another worker's batch served the target
    now = told()
    assert now[:2] == (1, why) and any(why in stopped for stopped in now[2:]), now

    assert lane.release_held(conn, [target_id]) == 1  # the holds ended (taken, or over)
    conn.execute(clear, (target_id,))
    assert told() == (0, None), told()
