"""A model change whose new model cannot serve keeps only the change waiting: the application's
rows written meanwhile get the old model's vector at once (docs/model-changes.md: "the
application's rows are still embedded with the old model meanwhile").

Before the fix only a new model that failed to load did so: a remote new model whose provider
failed, or a new model whose dimensions do not fit the change's column, held the target's live
jobs with the change's (the row written during the change had no vector at all).

And a batch of such a change that holds both kinds of row (worker/pipeline/shadow.py): the
application's (both vectors wanted) and the change's own (only the new vector), when the new
model cannot serve at all, and when it fails on some rows only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from tests.integration.conftest import TINY_DIMS, TINY_MODELS, WIDE, WIDE_DIMS
from tests.support.fetch import fetch_value
from tests.support.in_flight import in_process_worker
from tests.support.jobs import messages, move_inbox
from tests.support.provider_server import ProviderServer, fake_vector
from worker import config, db, exits
from worker.config import Settings
from worker.models import files
from worker.models.loaded import LoadedModels
from worker.models.remote import breaker as breakers
from worker.models.remote import client
from worker.pipeline import jobs as jobqueue
from worker.pipeline import stages, write
from worker.pipeline.targets import TargetRegistry
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]
ROWS = 10
LIVE = {1: "edited during the change", 11: "written during the change"}


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(client, "BACKOFF", lambda state: 0.01)
    breakers.reset()
    yield
    breakers.reset()


@pytest.fixture
def old_model(conn: Conn, tiny_models: tuple[str, str], run_once: Callable[..., Worker]) -> str:
    """`docs` of ROWS rows, embedded with tiny-a."""
    old = tiny_models[0]
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute(
        "INSERT INTO docs SELECT i, 'document number ' || i FROM generate_series(1, %s) i",
        (ROWS,),
    )
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (old,))
    run_once(model=old)
    assert conn.execute("SELECT count(embedding) FROM docs").fetchone() == (ROWS,)
    return old


def write_during_the_change(conn: Conn, run_once: Callable[..., Worker], old: str) -> None:
    """The application inserts a row and edits one while the change waits; a worker runs.
    Both have the old model's vector, searchable; the change still waits, its reason shown."""
    conn.execute("INSERT INTO docs VALUES (11, 'written during the change')")
    conn.execute("UPDATE docs SET body = 'edited during the change' WHERE id = 1")
    run_once(model=old, expect=exits.UNSERVED)  # the change's jobs stay held
    rows = dict(conn.execute("SELECT id, embedding IS NOT NULL FROM docs").fetchall())
    assert rows[11] and rows[1], rows
    assert conn.execute("SELECT count(*) FROM embeddings.model_changes").fetchone() == (1,)
    assert fetch_value(conn, "SELECT model FROM embeddings.targets") == old


def test_a_remote_new_model_whose_provider_fails_holds_only_the_change(
    conn: Conn, old_model: str, run_once: Callable[..., Worker]
) -> None:
    with ProviderServer(kind="openai", dims=32) as provider:
        provider.down = True
        conn.execute(
            "SELECT embeddings.register_model('remote-32', 32, 'openai', %s, 'test-model',"
            " credential => '', timeout_seconds => 0.5)",
            (provider.base_url,),
        )
        conn.execute("SELECT embeddings.watch('docs', 'body', model => 'remote-32')")
        write_during_the_change(conn, run_once, old_model)
        assert provider.requests  # the new model was asked, and failed
    row = conn.execute("SELECT held_jobs, deferred_reason FROM embeddings.status").fetchone()
    assert row is not None and row[0] > 0 and "HTTP 500" in str(row[1]), row


def test_a_new_model_of_another_dimension_than_registered_holds_only_the_change(
    conn: Conn, old_model: str, run_once: Callable[..., Worker]
) -> None:
    """tiny-wide (48-d) registered with 32 dimensions: the change's column is halfvec(32)."""
    conn.execute(
        "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
        " VALUES (%s, 32, 512, 'mean')",
        (WIDE,),
    )
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (WIDE,))
    write_during_the_change(conn, run_once, old_model)
    row = conn.execute("SELECT held_jobs, deferred_reason FROM embeddings.status").fetchone()
    assert row is not None and row[0] > 0, row
    assert f"has 32 dimensions, the model produces {WIDE_DIMS}" in str(row[1]), row
    # Its fix is a registration of the right dimensions, not a model made loadable (finding 3).
    fix = fetch_value(conn, "SELECT fix FROM embeddings.stopped WHERE state = 'held'")
    assert f"SELECT embeddings.register_model('NEW_NAME', {WIDE_DIMS}, ...)" in fix, fix
    assert "refuses to change the dimensions of a model in use" in fix, fix
    assert "SELECT embeddings.watch('public.docs', 'body', model => 'NEW_NAME')" in fix, fix
    assert "SELECT embeddings.cancel_change('public.docs', 'embedding')" in fix, fix
    assert "EMBED_MODEL_PATH" not in fix and "loadable" not in fix, fix


def test_a_remote_model_answering_other_dimensions_than_registered_is_told_to_register_them(
    conn: Conn, tiny_models: tuple[str, str], run_once: Callable[..., Worker]
) -> None:
    """Registered with 512 dimensions, the server answers 384: the fix is a registration of
    384 under a new name, not the provider made reachable or its key valid."""
    with ProviderServer(kind="openai", dims=384) as provider:
        conn.execute(
            "SELECT embeddings.register_model('remote-512', 512, 'openai', %s, 'test-model',"
            " credential => '', timeout_seconds => 0.5)",
            (provider.base_url,),
        )
        conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
        conn.execute("INSERT INTO docs VALUES (1, 'a document')")
        conn.execute("SELECT embeddings.watch('docs', 'body', model => 'remote-512')")
        run_once(model=tiny_models[0], expect=exits.UNSERVED)
    reason, fix = conn.execute(
        "SELECT reason, fix FROM embeddings.stopped WHERE state = 'held'"
    ).fetchone() or ("", "")
    assert "answered 384-dimensional vectors" in str(reason), reason
    assert "SELECT embeddings.register_model('NEW_NAME', 384, ...), provider 'openai'" in fix
    assert "SELECT embeddings.watch('public.docs', 'body', model => 'NEW_NAME')" in fix, fix
    assert "reachable" not in fix and "key valid" not in fix, fix


def one_lane(conn: Conn) -> None:
    """The application's writes of LIVE and the change's jobs in one queue, so that the worker
    reads them as one batch: the change's jobs (in the backfill lane) join the live lane."""
    conn.execute("INSERT INTO docs VALUES (11, %s)", (LIVE[11],))
    conn.execute("UPDATE docs SET body = %s WHERE id = 1", (LIVE[1],))
    move_inbox(conn)
    conn.execute(
        "SELECT pgmq.send_batch('embedding_jobs', array_agg(message ORDER BY msg_id))"
        " FROM pgmq.q_embedding_jobs_backfill"
    )
    conn.execute("SELECT pgmq.purge_queue('embedding_jobs_backfill')")
    kinds = {bool(m.get("shadow")) for m in messages(conn)}
    assert kinds == {True, False}, messages(conn)


def shadow_column(conn: Conn) -> str:
    return str(fetch_value(conn, "SELECT shadow_column FROM embeddings.model_changes"))


def assert_old_vectors(conn: Conn, embedders: LoadedModels, old: str) -> None:
    """The application's rows of LIVE have the old model's vector of their new content."""
    for key, body in LIVE.items():
        stored = fetch_value(conn, "SELECT embedding::text FROM docs WHERE id = %s", (key,))
        got = np.array([float(x) for x in str(stored).strip("[]").split(",")])
        assert np.allclose(got, embedders.get(old).embed([body])[0], atol=2e-3), key


def test_the_application_rows_of_a_mixed_batch_get_the_old_vector_while_the_new_model_cannot_load(
    conn: Conn, old_model: str, run_once: Callable[..., Worker], embedders: LoadedModels
) -> None:
    conn.execute(
        "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
        " VALUES ('absent-model', 16, 512, 'mean')"
    )
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'absent-model')")
    one_lane(conn)

    run_once(model=old_model, max_attempts=1, batch_size=64, expect=(exits.OK, exits.UNSERVED))

    assert_old_vectors(conn, embedders, old_model)
    column = shadow_column(conn)
    assert conn.execute(f"SELECT count({column}) FROM docs").fetchone() == (0,)
    # The change's jobs wait, no attempt spent (max_attempts=1: one would dead-letter them):
    # every row's key but the application's new row is still queued, for the change.
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)
    queued = {int(k) for m in messages(conn) for k in m.get("keys", [m.get("id")])}
    assert queued >= set(range(2, ROWS + 1)), messages(conn)
    assert all(m.get("shadow") for m in messages(conn)), messages(conn)
    assert fetch_value(conn, "SELECT model FROM embeddings.targets") == old_model
    assert conn.execute("SELECT count(*) FROM embeddings.model_changes").fetchone() == (1,)


def test_a_row_the_new_model_fails_on_fails_alone_and_the_old_vector_is_kept(
    conn: Conn, old_model: str, run_once: Callable[..., Worker], embedders: LoadedModels
) -> None:
    """The new model (a stand-in provider) refuses one input of the change's rows and one of
    the application's: every other row gets its new vector in the same batch; the change's row
    is dead-lettered with the provider's refusal; the application's keeps its old vector."""
    conn.execute("UPDATE docs SET body = 'document POISON five' WHERE id = 5")
    run_once(model=old_model)  # (its old vector)
    LIVE[1] = "edited during the change, POISON"
    try:
        with ProviderServer(kind="openai", dims=8) as provider:
            conn.execute(
                "SELECT embeddings.register_model('remote-8', 8, 'openai', %s, 'test-model',"
                " credential => '', timeout_seconds => 0.5)",
                (provider.base_url,),
            )
            conn.execute("SELECT embeddings.watch('docs', 'body', model => 'remote-8')")
            one_lane(conn)
            run_once(
                model=old_model, max_attempts=1, batch_size=64, expect=(exits.OK, exits.UNSERVED)
            )
    finally:
        LIVE[1] = "edited during the change"
    column = shadow_column(conn)
    new = dict(conn.execute(f"SELECT id, {column}::text FROM docs").fetchall())
    bodies = dict(conn.execute("SELECT id, body FROM docs").fetchall())
    for key, vector in new.items():
        if "POISON" in bodies[key]:
            assert vector is None, key
            continue
        got = np.array([float(x) for x in str(vector).strip("[]").split(",")])
        assert np.allclose(got, fake_vector(bodies[key], 8), atol=2e-3), key
    failures = dict(
        conn.execute("SELECT row_key::text, last_error FROM embeddings.failures").fetchall()
    )
    assert set(failures) == {"5"} and "POISON is not allowed" in failures["5"], failures
    stored = fetch_value(conn, "SELECT embedding::text FROM docs WHERE id = 1")
    got = np.array([float(x) for x in str(stored).strip("[]").split(",")])
    expected = embedders.get(old_model).embed(["edited during the change, POISON"])[0]
    assert np.allclose(got, expected, atol=2e-3)


def test_the_change_rows_of_a_mixed_batch_go_back_held_for_a_worker_that_has_the_new_model(
    conn: Conn,
    old_model: str,
    settings: Settings,
    dsn: str,
    embedders: LoadedModels,
    tmp_path: Path,
) -> None:
    """The change's own rows of a mixed batch go back held for their target, as a deferral's
    jobs do, and the batch says why in status. Before the fix they went back unmarked and no
    reason was recorded: a worker started later with the new model waited out their minute
    (its start takes held jobs only), and its `run --once` left the change unfinished."""
    conn.execute(
        "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
        " VALUES ('late-model', %s, 512, 'mean')",
        (TINY_DIMS,),
    )
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'late-model')")
    target_id = fetch_value(conn, "SELECT id FROM embeddings.targets")
    one_lane(conn)

    # One batch of both kinds of row, by a worker that cannot load the new model.
    queue = jobqueue.Queue(settings.queue)
    with db.connect(dsn) as worker_conn:
        db.register_vector_types(worker_conn)
        batch = stages.read(worker_conn, queue, TargetRegistry(), settings)
        assert batch is not None and len(batch.jobs) == len(messages(conn)), batch
        stages.load(worker_conn, batch, embedders)
        stages.embed(embedders, batch)
        write.write(worker_conn, queue, batch, settings)

    assert_old_vectors(conn, embedders, old_model)
    change = messages(conn)
    assert change and all(m.get("shadow") for m in change), change
    assert all(m.get("held", {}).get("target") == target_id for m in change), change
    row = conn.execute("SELECT held_jobs, deferred_reason FROM embeddings.status").fetchone()
    assert row is not None and row[0] > 0 and "late-model" in str(row[1]), row

    # A worker of its own (a new process's loaded models) that finds the new model on its path:
    # its start takes the held jobs, and its run completes the change.
    arrived = tmp_path / "models"
    arrived.mkdir()
    (arrived / "late-model").symlink_to(embedders.location.locate(TINY_MODELS[1]))
    path = os.pathsep.join([str(arrived), *map(str, embedders.location.path)])
    fresh = LoadedModels(
        location=files.ModelLocation.of(path, embedders.location.cache),
        downloads=embedders.downloads,
        api_key=config.api_key_from_env,
        threads=embedders.threads,
    )
    assert in_process_worker(settings, fresh, once=True, model=old_model).run() == exits.OK
    assert fetch_value(conn, "SELECT model FROM embeddings.targets") == "late-model"
    assert conn.execute("SELECT count(*) FROM embeddings.model_changes").fetchone() == (0,)
    assert conn.execute("SELECT count(embedding) FROM docs").fetchone() == (ROWS + 1,)
