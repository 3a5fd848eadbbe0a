"""Model changes without downtime (blue/green) and priority lanes, on the real Postgres.

A change fills a shadow column with the new model's vectors while the target's column keeps
serving the old model's, then swaps them in one short transaction. A sampler reads the column
continuously from another connection while the application keeps writing: no snapshot may hold
vectors of two models, and no row that had a vector may be seen without one.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import psycopg
import pytest

from tests.integration.conftest import WIDE, WIDE_DIMS
from tests.support.deferred_indexes import hnsw_index_names
from tests.support.fetch import fetch_value
from tests.support.in_flight import stop_worker
from tests.support.process import WorkerProcess, cli_json, wait_for
from worker import exits
from worker.config import Settings
from worker.models.loaded import LoadedModels
from worker.models.query_batch import QueryBatchers
from worker.process.runner import Worker
from worker.retrieval.pool import SearchConnections
from worker.retrieval.request import SearchRequest
from worker.retrieval.search import SearchService

Conn = psycopg.Connection[Any]
EmbeddedDocs = Callable[[int], tuple[str, str, str]]


@pytest.fixture
def models(conn: Conn, tiny_models: tuple[str, str]) -> tuple[str, str, str]:
    """tiny-a and tiny-b (32-d) and tiny-wide (48-d), findable and registered."""
    conn.execute(
        "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
        " VALUES (%s, %s, 512, 'mean')",
        (WIDE, WIDE_DIMS),
    )
    return tiny_models[0], tiny_models[1], WIDE


@pytest.fixture
def worker_settings(settings: Settings, models: tuple[str, str, str]) -> Settings:
    return settings.with_overrides(model=models[0], batch_size=32, poll_seconds=0.2)


@pytest.fixture
def running(worker_settings: Settings, embedders: LoadedModels) -> Iterator[Callable[[], Worker]]:
    """Starts an in-process worker (not --once) in a thread; stopped at the end of the test."""
    started: list[tuple[Worker, threading.Thread]] = []

    def start() -> Worker:
        worker = Worker(worker_settings, embedders=embedders, progress=False, handle_signals=False)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        started.append((worker, thread))
        return worker

    yield start
    for worker, thread in started:
        stop_worker(worker, thread)


def make_table(conn: Conn, rows: int, *, clear_on_update: bool = True, model: str) -> None:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute(
        "INSERT INTO docs SELECT i, 'document number ' || i FROM generate_series(1, %s) i", (rows,)
    )
    conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s, clear_on_update => %s)",
        (model, clear_on_update),
    )


@pytest.fixture
def embedded_docs(
    conn: Conn, models: tuple[str, str, str], run_once: Callable[..., Worker]
) -> EmbeddedDocs:
    """Makes `docs` of a number of rows on the first model and embeds them (one run); returns
    the models."""

    def make(rows: int) -> tuple[str, str, str]:
        make_table(conn, rows, model=models[0])
        run_once(model=models[0])
        return models

    return make


def target_model(conn: Conn) -> str:
    return str(fetch_value(conn, "SELECT model FROM embeddings.targets"))


def in_change(conn: Conn) -> bool:
    row = conn.execute("SELECT count(*) FROM embeddings.model_changes").fetchone()
    return row is not None and row[0] > 0


def column_type(conn: Conn, column: str) -> str | None:
    row = conn.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = 'docs'::regclass AND attname = %s AND NOT attisdropped",
        (column,),
    ).fetchone()
    return None if row is None else str(row[0])


class Oracle:
    """Which model produced a stored vector, among the models and every text a row ever had."""

    def __init__(self, embedders: LoadedModels, models: list[str]) -> None:
        self.embedders = embedders
        self.models = models
        self._cache: dict[tuple[str, str], np.ndarray[Any, Any]] = {}

    def vector(self, model: str, text: str) -> np.ndarray[Any, Any]:
        if (model, text) not in self._cache:
            self._cache[(model, text)] = self.embedders.get(model).embed([text])[0]
        return self._cache[(model, text)]

    def producer(self, vector: list[float], texts: set[str]) -> str | None:
        stored = np.array(vector, dtype=np.float32)
        for model in self.models:
            if len(stored) != self.embedders.get(model).dim:
                continue
            for text in texts:
                if np.allclose(stored, self.vector(model, text), atol=2e-3):
                    return model
        return None


def test_a_change_while_writes_arrive_never_exposes_a_mixed_or_missing_vector(
    conn: Conn,
    dsn: str,
    models: tuple[str, str, str],
    embedders: LoadedModels,
    running: Callable[[], Worker],
) -> None:
    old, new, _ = models
    make_table(conn, 400, clear_on_update=False, model=old)
    running()
    wait_for(
        lambda: conn.execute("SELECT count(embedding) FROM docs").fetchone() == (400,),
        60,
        what="the first model's vectors",
    )
    history: dict[int, set[str]] = {
        k: {b} for k, b in conn.execute("SELECT id, body FROM docs").fetchall()
    }
    history_lock = threading.Lock()
    oracle = Oracle(embedders, [old, new])
    stop = threading.Event()
    problems: list[str] = []
    samples = [0]

    def application() -> None:
        """Inserts and content updates, one statement each, until stopped."""
        n = 0
        with psycopg.connect(dsn, autocommit=True) as app:
            while not stop.is_set():
                n += 1
                key, text = (1000 + n, f"new row {n}") if n % 2 else (n % 400 + 1, f"edit {n}")
                with history_lock:
                    history.setdefault(key, set()).add(text)
                app.execute(
                    "INSERT INTO docs VALUES (%s, %s) ON CONFLICT (id) DO UPDATE SET body = %s",
                    (key, text, text),
                )
                time.sleep(0.01)

    def sampler() -> None:
        """Reads the whole column in one snapshot, again and again."""
        had_vector: set[int] = set()
        with psycopg.connect(dsn, autocommit=True) as reader:
            while not stop.is_set():
                try:
                    rows = reader.execute("SELECT id, embedding::real[] FROM docs").fetchall()
                except psycopg.errors.UndefinedColumn:
                    continue  # cannot happen: the column keeps its name throughout
                with history_lock:
                    texts = {k: set(v) for k, v in history.items()}
                producers = {
                    oracle.producer(v, texts.get(k, set())) for k, v in rows if v is not None
                }
                if len(producers) > 1:
                    problems.append(f"mixed models in one snapshot: {producers}")
                lost = [k for k, v in rows if v is None and k in had_vector]
                if lost:
                    problems.append(f"rows lost their vector: {lost[:5]}")
                had_vector |= {k for k, v in rows if v is not None}
                samples[0] += 1

    threads = [threading.Thread(target=application), threading.Thread(target=sampler)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        conn.execute(
            "SELECT embeddings.watch('docs', 'body', model => %s, clear_on_update => false)", (new,)
        )
        assert in_change(conn)
        status = conn.execute(
            "SELECT model, change_model, change_total_rows FROM embeddings.status"
        ).fetchone()
        assert status is not None and status[0] == old and status[1] == new and status[2] >= 400
        wait_for(lambda: target_model(conn) == new, 120, what="the change to complete")
        time.sleep(0.5)  # writes keep arriving after the swap too
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert samples[0] > 5
    assert problems == []
    assert column_type(conn, "embedding_next") is None  # swapped in, old column dropped
    # Quiescence: every row holds the new model's vector of its current content.
    wait_for(
        lambda: conn.execute("SELECT pending_jobs FROM embeddings.status").fetchone() == (0,),
        60,
        what="the queue to drain",
    )
    for key, body, vector in conn.execute("SELECT id, body, embedding::real[] FROM docs"):
        assert vector is not None, key
        assert np.allclose(np.array(vector), oracle.vector(new, body), atol=2e-3), key


def test_a_dimension_change_swaps_in_a_column_of_the_new_dimension_and_keeps_the_old(
    conn: Conn, dsn: str, embedded_docs: EmbeddedDocs, run_once: Callable[..., Worker]
) -> None:
    old, _, wide = embedded_docs(100)
    assert column_type(conn, "embedding") == "halfvec(32)"
    conn.execute(
        "SELECT embeddings.rewatch('docs', 'embedding', model => %s, keep_old => true)", (wide,)
    )
    assert column_type(conn, "embedding_next") == "halfvec(48)"
    assert conn.execute(
        "SELECT pending_live, pending_backfill FROM embeddings.status"
    ).fetchone() == (0, 100)
    run_once(model=old)
    assert target_model(conn) == wide
    assert column_type(conn, "embedding") == "halfvec(48)"
    assert column_type(conn, "embedding_previous") == "halfvec(32)"
    assert column_type(conn, "embedding_next") is None
    assert conn.execute(
        "SELECT count(embedding), count(embedding_previous) FROM docs"
    ).fetchone() == (100, 100)
    # The HNSW index went with its column: the new column's index has the old index's name.
    indexes = hnsw_index_names(conn, "docs")
    assert set(indexes) == {"embedding", "embedding_previous"}
    assert indexes["embedding"] == "docs_embedding_idx"
    # Rows written after the swap are embedded with the new model into the new column.
    conn.execute("INSERT INTO docs VALUES (500, 'after the change')")
    run_once(model=old)
    row = conn.execute("SELECT vector_dims(embedding) FROM docs WHERE id = 500").fetchone()
    assert row == (48,)
    # search embeds its query with the column's model now (48-d): the row is its own best match.
    found = cli_json(
        "search", "docs", "after the change", "-k", "1", "--json", "--database-url", dsn
    )
    assert found[0]["key"] == 500
    produced = conn.execute("SELECT vectors_from FROM embeddings.status").fetchone()
    assert produced is not None and produced[0].startswith(wide)


def test_a_service_that_searched_before_a_model_change_searches_with_the_new_model(
    conn: Conn,
    dsn: str,
    embedded_docs: EmbeddedDocs,
    run_once: Callable[..., Worker],
    embedders: LoadedModels,
) -> None:
    """A long-lived search service (POST /search's) knows the table's target from its last
    search: after a change to a model of another dimension it finds the target changed, embeds
    the question again with the new model and answers from the new column, not with an error
    or the old model's vector."""
    old, _, wide = embedded_docs(20)
    searches = SearchConnections(dsn, max_size=1)
    try:
        service = SearchService(searches.connection, QueryBatchers(embedders.get))
        assert len(service.search(SearchRequest("docs", "a question", k=3))) == 3
        assert service.targets.known("docs", None)[1].model == old  # type: ignore[index]
        conn.execute("SELECT embeddings.rewatch('docs', 'embedding', model => %s)", (wide,))
        run_once(model=old)
        assert column_type(conn, "embedding") == "halfvec(48)"
        conn.execute("INSERT INTO docs VALUES (500, 'after the change')")
        run_once(model=old)
        found = service.search(SearchRequest("docs", "after the change", k=1))
        assert [r["key"] for r in found] == [500]
        assert service.targets.known("docs", None)[1].model == wide  # type: ignore[index]
        # ... and its next search goes the known target's way again, with the new model.
        assert [
            r["key"] for r in service.search(SearchRequest("docs", "after the change", k=1))
        ] == [500]
    finally:
        searches.close()


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        ("rewatch(NULL)", "source"),
        ("rewatch('docs', NULL)", "embedding_column"),
        ("rewatch('docs', keep_old => NULL)", "keep_old"),
        ("cancel_change(NULL)", "source"),
        ("cancel_change('docs', NULL)", "embedding_column"),
    ],
)
def test_a_null_argument_is_an_error_naming_it(
    conn: Conn, models: tuple[str, str, str], call: str, argument: str
) -> None:
    """Not `syntax error at or near "IN"` from the table lock's statement made of NULL."""
    make_table(conn, 3, model=models[0])
    function = call.split("(", maxsplit=1)[0]
    with pytest.raises(
        psycopg.errors.NullValueNotAllowed,
        match=rf"^embeddings\.{function}\(\): {argument} must not be NULL",
    ):
        conn.execute(f"SELECT embeddings.{call}")
    assert not in_change(conn)


def test_cancel_abandons_the_change_cleanly(
    conn: Conn, embedded_docs: EmbeddedDocs, run_once: Callable[..., Worker]
) -> None:
    old, new, _ = embedded_docs(50)
    before = conn.execute("SELECT id, embedding::text FROM docs ORDER BY id").fetchall()
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (new,))
    assert column_type(conn, "embedding_next") == "halfvec(32)"
    assert conn.execute("SELECT embeddings.cancel_change('docs')").fetchone() == (True,)
    assert column_type(conn, "embedding_next") is None
    assert not in_change(conn)
    assert conn.execute("SELECT pending_jobs FROM embeddings.status").fetchone() == (0,)
    run_once(model=old)
    assert target_model(conn) == old
    assert conn.execute("SELECT id, embedding::text FROM docs ORDER BY id").fetchall() == before
    # A second cancel has nothing to do; watch() with the current model during a change cancels.
    assert conn.execute("SELECT embeddings.cancel_change('docs')").fetchone() == (False,)
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (new,))
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (old,))
    assert not in_change(conn) and column_type(conn, "embedding_next") is None


def test_a_worker_killed_mid_change_resumes_and_completes_it(
    conn: Conn, dsn: str, models: tuple[str, str, str]
) -> None:
    old, _, wide = models
    make_table(conn, 3000, model=old)
    env = {
        "EMBED_MODEL_PATH": os.environ["EMBED_MODEL_PATH"],
        "EMBED_MODEL": old,
        "EMBED_BATCH_SIZE": "16",
        "EMBED_VT_SECONDS": "3",
    }
    first = WorkerProcess(dsn, env, http=False)
    try:
        wait_for(
            lambda: conn.execute("SELECT count(embedding) FROM docs").fetchone() == (3000,),
            120,
            what="the first model's vectors",
        )
        conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (wide,))
        wait_for(
            lambda: (
                (conn.execute("SELECT count(embedding_next) FROM docs").fetchone() or (0,))[0] > 100
            ),
            120,
            what="part of the change",
        )
    finally:
        first.stop()  # SIGKILL: its leased jobs come back after EMBED_VT_SECONDS
    done = conn.execute("SELECT count(embedding_next) FROM docs").fetchone()
    assert done is not None and done[0] < 3000, "the change finished before the kill"
    assert target_model(conn) == old
    second = WorkerProcess(dsn, env, http=False)
    try:
        wait_for(lambda: target_model(conn) == wide, 180, what="the change to complete")
    finally:
        second.signal()
        second.wait_exit(30)
        second.stop()
    assert conn.execute("SELECT count(embedding) FROM docs").fetchone() == (3000,)
    assert column_type(conn, "embedding") == f"halfvec({WIDE_DIMS})"


def test_a_live_row_is_embedded_before_a_big_backfill_drains(
    conn: Conn, models: tuple[str, str, str], running: Callable[[], Worker]
) -> None:
    make_table(conn, 6000, model=models[0])
    assert conn.execute(
        "SELECT pending_live, pending_backfill FROM embeddings.status"
    ).fetchone() == (0, 6000)
    running()
    wait_for(
        lambda: (conn.execute("SELECT count(embedding) FROM docs").fetchone() or (0,))[0] > 200,
        60,
        what="the backfill to start",
    )
    conn.execute("INSERT INTO docs VALUES (100000, 'written by the application')")
    wait_for(
        lambda: (
            conn.execute("SELECT embedding IS NOT NULL FROM docs WHERE id = 100000").fetchone()
            == (True,)
        ),
        30,
        what="the live row's vector",
    )
    row = conn.execute("SELECT count(*) FROM docs WHERE embedding IS NULL").fetchone()
    left = row[0] if row else 0
    assert left > 1000, f"the backfill drained first ({left} left)"


def test_backfill_false_registers_without_enqueuing_and_keeps_existing_vectors(
    conn: Conn, models: tuple[str, str, str], run_once: Callable[..., Worker]
) -> None:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text, embedding halfvec(32))")
    conn.execute(
        "INSERT INTO docs SELECT i, 'doc ' || i, array_fill(0.5, ARRAY[32])::halfvec"
        " FROM generate_series(1, 20) i"
    )
    conn.execute("INSERT INTO docs VALUES (21, 'no vector yet')")
    conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s, backfill => false)", (models[0],)
    )
    assert conn.execute("SELECT pending_jobs FROM embeddings.status").fetchone() == (0,)
    conn.execute("INSERT INTO docs VALUES (22, 'a live row')")
    run_once(model=models[0])
    rows = dict(conn.execute("SELECT id, embedding IS NOT NULL FROM docs").fetchall())
    assert rows[22] and not rows[21]
    imported = conn.execute(
        "SELECT count(*) FROM docs WHERE embedding = array_fill(0.5, ARRAY[32])::halfvec"
    ).fetchone()
    assert imported == (20,)


def test_a_worker_of_another_variant_does_not_mix_vectors(
    conn: Conn,
    models: tuple[str, str, str],
    run_once: Callable[..., Worker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    old = models[0]
    make_table(conn, 10, model=old)
    run_once(model=old)
    recorded = conn.execute("SELECT vectors_from FROM embeddings.status").fetchone()
    assert recorded is not None and recorded[0].startswith(old) and recorded[0].endswith("fp32")
    conn.execute("UPDATE embeddings.provenance SET variant = 'int8'")  # as if int8 produced them
    conn.execute("INSERT INTO docs VALUES (11, 'one more')")
    caplog.clear()
    run_once(model=old, expect=exits.UNSERVED)  # the new row's job held: not mixing
    startup = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("were produced by" in m and "int8" in m for m in startup), startup
    row = conn.execute("SELECT pending_jobs, deferred_reason FROM embeddings.status").fetchone()
    assert row is not None and row[0] == 1 and "not mixing" in row[1]
    assert conn.execute("SELECT embedding FROM docs WHERE id = 11").fetchone() == (None,)


def test_rewatch_re_embeds_the_vectors_of_another_variant_blue_green(
    conn: Conn, embedded_docs: EmbeddedDocs, run_once: Callable[..., Worker]
) -> None:
    old = embedded_docs(10)[0]
    conn.execute("UPDATE embeddings.provenance SET variant = 'int8'")  # as if int8 produced them
    conn.execute("SELECT embeddings.rewatch('docs')")  # the same model: a re-embedding
    conn.execute("INSERT INTO docs VALUES (11, 'written during the change')")
    run_once(model=old)
    assert not in_change(conn)
    produced = conn.execute("SELECT vectors_from, pending_jobs FROM embeddings.status").fetchone()
    assert produced is not None and produced[0].endswith("fp32") and produced[1] == 0
    assert conn.execute("SELECT count(embedding) FROM docs").fetchone() == (11,)


def test_a_missing_new_model_does_not_stop_the_application_s_rows(
    conn: Conn, embedded_docs: EmbeddedDocs, run_once: Callable[..., Worker]
) -> None:
    old = embedded_docs(10)[0]
    conn.execute(
        "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
        " VALUES ('absent-model', 32, 512, 'mean')"
    )
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'absent-model')")
    conn.execute("INSERT INTO docs VALUES (11, 'written during the change')")
    conn.execute("UPDATE docs SET body = 'edited during the change' WHERE id = 1")
    run_once(model=old, expect=exits.UNSERVED)  # the change's jobs held
    # The application's rows have the old model's vectors (searchable); the change waits.
    rows = dict(conn.execute("SELECT id, embedding IS NOT NULL FROM docs").fetchall())
    assert rows[11] and rows[1]
    assert in_change(conn) and target_model(conn) == old
    assert conn.execute("SELECT count(embedding_next) FROM docs").fetchone() == (0,)
    row = conn.execute("SELECT pending_backfill, deferred_reason FROM embeddings.status").fetchone()
    assert row is not None and row[0] == 10 and "absent-model" in row[1]
    # What stops it names the change's model and the way back (it named the old model, which
    # the worker has, and a download of it).
    fix = fetch_value(conn, "SELECT fix FROM embeddings.stopped WHERE state = 'held'")
    assert "model absent-model loadable where the worker runs (EMBED_MODEL_PATH" in fix, fix
    assert "SELECT embeddings.cancel_change('public.docs', 'embedding'); a column" in fix, fix
    assert old not in fix and "model download" not in fix, fix


def change_to_absent_model(conn: Conn) -> None:
    """A change of `docs` to 'absent-model': registered, and no worker has it."""
    conn.execute(
        "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
        " VALUES ('absent-model', 32, 512, 'mean')"
    )
    conn.execute("SELECT embeddings.rewatch('docs', model => 'absent-model')")


def stopped_states(conn: Conn) -> list[str]:
    return [r[0] for r in conn.execute("SELECT state FROM embeddings.stopped")]


def test_serving_the_application_s_rows_keeps_the_hold_of_the_change_s_jobs(
    conn: Conn, embedded_docs: EmbeddedDocs, running: Callable[[], Worker]
) -> None:
    """The change's jobs wait for a model the worker cannot load, while the application's rows
    are embedded by the old model (the live lane). Serving one of those cleared the target's
    deferral: status said nothing was held (held_jobs 0, no reason, not stopped) while the
    change's jobs still were."""
    embedded_docs(10)
    change_to_absent_model(conn)
    running()
    wait_for(lambda: stopped_states(conn) == ["held"], timeout=60)
    conn.execute("INSERT INTO docs VALUES (11, 'written during the change')")
    wait_for(
        lambda: fetch_value(conn, "SELECT embedding IS NOT NULL FROM docs WHERE id = 11"),
        timeout=60,
    )
    row = conn.execute("SELECT held_jobs, deferred_reason FROM embeddings.status").fetchone()
    assert row is not None and row[0] > 0 and "absent-model" in str(row[1]), row
    assert stopped_states(conn) == ["held"]


def test_cancelling_a_held_change_ends_its_hold(
    conn: Conn, dsn: str, embedded_docs: EmbeddedDocs, run_once: Callable[..., Worker]
) -> None:
    """The hold of a change's jobs (its model cannot load) is the change's: cancelled, nothing
    is held. A worker that held them again while cancel_change() waited for the table (its
    transaction begun before) left a deferral newer than the cancel, and `embeddings.stopped`
    went on listing the target as held for the change's model, no job pending, until the
    deferral aged out (/readyz degraded meanwhile)."""
    old = embedded_docs(10)[0]
    change_to_absent_model(conn)
    run_once(model=old, expect=exits.UNSERVED)
    assert stopped_states(conn) == ["held"]
    with psycopg.connect(dsn) as cancel:
        cancel.execute("SELECT now()")  # its transaction begins (now() is its start)
        # the worker, meanwhile, holds the change's jobs again
        conn.execute(
            "SELECT embeddings_internal.note_deferrals(ARRAY[id], ARRAY[%s], ARRAY[1])"
            " FROM embeddings.targets",
            ("model 'absent-model' is not present",),
        )
        assert fetch_value(cancel, "SELECT embeddings.cancel_change('docs')") is True
    assert stopped_states(conn) == []
    row = conn.execute("SELECT pending_jobs, held_jobs, deferred_reason FROM embeddings.status")
    assert row.fetchone() == (0, 0, None)


def test_a_change_of_a_table_larger_than_a_step_queues_its_rows_in_key_ranges(
    conn: Conn, embedded_docs: EmbeddedDocs, run_once: Callable[..., Worker]
) -> None:
    old, new, _ = embedded_docs(2500)
    step = conn.execute("SELECT embeddings.backfill_step_keys()").fetchone()
    assert step is not None and step[0] < 2500

    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (new,))

    # watch() queued one bounded step of the change, not the table; the rest waits in a cursor.
    assert conn.execute("SELECT lane, every_row FROM embeddings.backfills").fetchall() == [
        ("change", True)
    ]
    queued = conn.execute(
        "SELECT sum(embeddings.message_key_count(message)) FROM pgmq.q_embedding_jobs_backfill"
        " WHERE message @> '{\"shadow\": true}'"
    ).fetchone()
    assert queued == (step[0],)
    row = conn.execute(
        "SELECT change_done_rows, change_total_rows FROM embeddings_internal.target_status(exact => false)"
    ).fetchone()
    assert row == (0, 2500)  # estimated from the cursor and the queue, the table unread
    waits = conn.execute(
        "SELECT embeddings_internal.complete_change(id) FROM embeddings.targets"
    ).fetchone()
    assert waits is not None and "jobs of the change are waiting" in waits[0]

    wait_for(lambda: (run_once(model=old), not in_change(conn))[1], timeout=120)

    assert target_model(conn) == new
    assert conn.execute("SELECT count(embedding) FROM docs").fetchone() == (2500,)
    assert conn.execute("SELECT count(*) FROM embeddings.backfills").fetchone() == (0,)


def test_cancelling_a_change_mid_backfill_leaves_an_ordinary_backfill(
    conn: Conn, embedded_docs: EmbeddedDocs, run_once: Callable[..., Worker]
) -> None:
    old, new, _ = embedded_docs(2500)
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (new,))
    assert conn.execute("SELECT embeddings.cancel_change('docs')").fetchone() == (True,)

    assert conn.execute(
        "SELECT lane, every_row, after_key FROM embeddings.backfills"
    ).fetchall() == [("backfill", False, None)]
    run_once(model=old)  # every row has its vector: the backfill queues nothing and ends
    assert conn.execute("SELECT count(*) FROM embeddings.backfills").fetchone() == (0,)
    assert target_model(conn) == old
    assert conn.execute("SELECT count(embedding) FROM docs").fetchone() == (2500,)


@pytest.mark.parametrize("start", ["watch", "cancel"])
def test_a_change_waits_for_a_worker_write_in_flight_instead_of_deadlocking(
    conn: Conn, dsn: str, models: tuple[str, str, str], start: str
) -> None:
    # A worker's write locks the table (embeddings_internal.lock_target), then the registration. A
    # change that locked the registration first and then altered the table deadlocked with it.
    make_table(conn, 3, model=models[0])
    if start == "cancel":
        conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (models[1],))
    target = conn.execute("SELECT id FROM embeddings.targets").fetchone()
    assert target is not None
    statement = (
        f"SELECT embeddings.watch('docs', 'body', model => '{models[1]}')"
        if start == "watch"
        else "SELECT embeddings.cancel_change('docs')"
    )
    errors: list[BaseException] = []
    with psycopg.connect(dsn) as write, psycopg.connect(dsn, autocommit=True) as ddl:
        write.execute("EXPLAIN UPDATE docs SET embedding = embedding WHERE false")  # the table
        ddl_pid = ddl.info.backend_pid

        def change() -> None:
            try:
                ddl.execute(statement)
            except BaseException as error:  # reported by the assertion below
                errors.append(error)

        thread = threading.Thread(target=change)
        thread.start()
        wait_for(
            lambda: (
                conn.execute(
                    "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
                    (ddl_pid,),
                ).fetchone()
                == (True,)
            ),
            what="the change to wait for the write's table lock",
        )
        version = write.execute(
            "SELECT embeddings_internal.lock_target_version(%s)", target
        ).fetchone()
        assert version is not None and version[0] is not None
        write.commit()
        thread.join(timeout=30)
    assert errors == []
    assert in_change(conn) == (start == "watch")
