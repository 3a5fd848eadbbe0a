"""The targets a running worker cannot serve (worker/process/held.py), as /readyz's
deferred_targets shows them: known from the database's definitions, not only from a batch's."""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg

from tests.integration.conftest import TINY_DIMS
from tests.support.fetch import fetch_value
from worker import db, exceptions
from worker.models.loaded import LoadedModels
from worker.pipeline import jobs as jobqueue
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


def test_a_change_off_a_model_that_cannot_load_is_served_by_the_new_model_alone(
    conn: Conn, dsn: str, tiny_models: tuple[str, str], embedders: LoadedModels
) -> None:
    """During a change whose old model cannot load here, every row gets the new model's vector
    only (pipeline/shadow.py): the target is servable, its held jobs are taken as soon as the
    new model loads, and /readyz does not list it."""
    conn.execute(
        "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
        " VALUES ('ghost', %s, 512, 'mean')",
        (TINY_DIMS,),
    )
    with contextlib.suppress(exceptions.ModelError):
        embedders.get("ghost")  # on no disk: it failed to load here
    new = tiny_models[0]
    embedders.get(new)
    conn.execute(
        f"CREATE TABLE docs (id int PRIMARY KEY, body text, embedding halfvec({TINY_DIMS}))"
    )
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'ghost')")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (new,))
    registry = TargetRegistry()
    with db.connect(dsn) as worker_conn:
        targets = registry.refresh(worker_conn)
    (target,) = targets.values()
    assert target.in_change and target.shadow_model == new

    assert held.unservable("embedding_jobs", registry, embedders) == {}
    jobs = held.HeldJobs("embedding_jobs", Lanes("embedding_jobs", 64), registry, embedders)
    assert target.id in jobs.servable()


def test_jobs_held_for_a_problem_mended_between_two_rounds_are_taken_at_once(
    conn: Conn, dsn: str, tiny_models: tuple[str, str], embedders: LoadedModels
) -> None:
    """QA 5a: the content column jsonb for a moment, a batch held the target's jobs, and the
    column was text again before the keeper's next round: the keeper, which had never seen the
    target unservable, left them held for the minute. A target redefined since the last round
    and servable now has its held jobs taken."""
    model = tiny_models[0]
    embedders.get(model)
    conn.execute(
        f"CREATE TABLE docs (id int PRIMARY KEY, body text, embedding halfvec({TINY_DIMS}))"
    )
    target_id = fetch_value(conn, "SELECT embeddings.watch('docs', 'body', model => %s)", (model,))
    registry = TargetRegistry()
    jobs = held.HeldJobs("embedding_jobs", Lanes("embedding_jobs", 64), registry, embedders)
    queue = jobqueue.Queue("embedding_jobs")
    with db.connect(dsn) as worker_conn:
        registry.refresh(worker_conn)
        jobs.release(worker_conn)  # a round: servable

        conn.execute("ALTER TABLE docs ALTER COLUMN body TYPE jsonb USING to_jsonb(body)")
        registry.current_definitions(worker_conn)  # as a batch's read
        msg_id = fetch_value(
            conn,
            "SELECT * FROM pgmq.send('embedding_jobs', jsonb_build_object('target', %s::int,"
            " 'keys', jsonb_build_array(1)))",
            (target_id,),
        )
        queue.defer(worker_conn, {msg_id: target_id}, 60)  # the batch held them
        conn.execute("ALTER TABLE docs ALTER COLUMN body TYPE text USING body #>> '{}'")

        assert jobs.release(worker_conn) == 1
        assert jobs.release(worker_conn) == 0  # once


def test_jobs_held_for_a_missing_grant_are_taken_within_a_round_of_the_grant(
    conn: Conn, dsn: str, tiny_models: tuple[str, str], embedders: LoadedModels, role: str
) -> None:
    """QA 5a 11: jobs held because the table's owner lost USAGE on the table's schema (the
    functions that read it as its owner fail: exceptions.TargetUnavailable) waited out their
    minute after the GRANT that mended it: no definition changed, so the keeper saw nothing.
    Nor does a GRANT (or a CREATE FUNCTION, or anything without the event trigger) reach
    any version. The keeper takes them once a catalog row they depend on (of the table, its
    schema, its functions, its owner's roles) changed since they were held."""
    model = tiny_models[0]
    embedders.get(model)
    conn.execute("CREATE SCHEMA app")
    conn.execute(f"GRANT USAGE, CREATE ON SCHEMA app TO {role}")
    conn.execute(f"SET ROLE {role}")
    conn.execute(
        "CREATE TABLE app.docs (id int PRIMARY KEY, body text,"
        f" embedding {held_vector_type(conn)}({TINY_DIMS}))"
    )
    conn.execute("INSERT INTO app.docs VALUES (1, 'one')")
    conn.execute("RESET ROLE")
    target_id = fetch_value(
        conn, "SELECT embeddings.watch('app.docs', 'body', model => %s)", (model,)
    )
    conn.execute("INSERT INTO app.docs VALUES (2, 'two')")  # a live job
    conn.execute("SELECT embeddings_internal.move_inbox('embedding_jobs')")
    registry = TargetRegistry()
    jobs = held.HeldJobs("embedding_jobs", Lanes("embedding_jobs", 64), registry, embedders)
    queue = jobqueue.Queue("embedding_jobs")
    with db.connect(dsn) as worker_conn:
        target = registry.refresh(worker_conn)[target_id]
        jobs.release(worker_conn)  # a round: servable

        conn.execute(f"REVOKE USAGE ON SCHEMA app FROM {role}")
        with contextlib.suppress(exceptions.TargetUnavailable), db.translated():
            worker_conn.execute(target.query("load_content"), target.key_params(["1"]))
            raise AssertionError("the owner without USAGE read its table")
        # A batch held the target's jobs, and said why.
        msg_ids = [
            m for (m,) in conn.execute("SELECT msg_id FROM pgmq.q_embedding_jobs").fetchall()
        ]
        assert msg_ids
        queue.defer(worker_conn, dict.fromkeys(msg_ids, target_id), 60)
        worker_conn.execute(
            "SELECT embeddings_internal.note_deferrals(%s, %s, %s)",
            ([target_id], ["permission denied for schema app"], [len(msg_ids)]),
        )
        assert jobs.release(worker_conn) == 0  # nothing mended: they stay held

        conn.execute(f"GRANT USAGE ON SCHEMA app TO {role}")
        assert jobs.release(worker_conn) == len(msg_ids)
        assert jobs.release(worker_conn) == 0  # once


def held_vector_type(conn: Conn) -> str:
    """halfvec, schema-qualified as the installed pgvector has it (a role's path may miss it)."""
    found = fetch_value(conn, "SELECT 'halfvec'::regtype::text")
    return str(found)
