"""The worker end to end, in-process, with the real all-MiniLM-L6-v2 and a real database."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.support import stores
from tests.support.in_flight import InFlight
from tests.support.jobs import clear_queue, messages
from worker import exits
from worker.config import Settings
from worker.models.loaded import LoadedModels
from worker.pipeline.batch import RowState
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]

TEXTS = {
    1: "The cat sleeps on the warm windowsill.",
    2: "A kitten naps in the sun by the window.",
    3: "Quarterly revenue grew by twelve percent.",
    4: "Rockets need a lot of fuel to reach orbit.",
}


def stored(conn: Conn, table: str = "docs") -> dict[int, np.ndarray[Any, Any] | None]:
    rows = conn.execute(f"SELECT id, embedding::real[] FROM {table} ORDER BY id").fetchall()
    return {k: None if v is None else np.array(v, dtype=np.float32) for k, v in rows}


def cosine(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture
def docs(conn: Conn, minilm: str) -> int:
    stores.texts_table(conn, TEXTS)
    return stores.watch(conn, "row", minilm)


def test_stored_vectors_equal_the_embedder_output(
    conn: Conn, docs: int, run_once: Callable[..., Worker], embedders: LoadedModels, minilm: str
) -> None:
    run_once()
    vectors = stored(conn)
    expected = embedders.get(minilm).embed(list(TEXTS.values()))
    for i, key in enumerate(TEXTS):
        vector = vectors[key]
        assert vector is not None
        assert cosine(vector, expected[i]) >= 0.999
    # Meaning survived the trip: the paraphrase is nearest to the cat sentence.
    nearest = conn.execute(
        "SELECT b.id FROM docs a, docs b WHERE a.id = 1 AND b.id <> 1 ORDER BY a.embedding <=> b.embedding LIMIT 1"
    ).fetchone()
    assert nearest == (2,)
    assert messages(conn) == []
    status = conn.execute(
        "SELECT total_rows, embedded_rows, pending_jobs, failed_jobs FROM embeddings.status"
    ).fetchone()
    assert status == (4, 4, 0, 0)


def test_updates_are_re_embedded_and_blank_content_cleared(
    conn: Conn, docs: int, run_once: Callable[..., Worker], embedders: LoadedModels, minilm: str
) -> None:
    run_once()
    before = stored(conn)
    conn.execute(
        "UPDATE docs SET body = 'Completely different words about the ocean.' WHERE id = 3"
    )
    assert stored(conn)[3] is None  # cleared at once: search never sees the old text's vector
    run_once()
    after = stored(conn)
    new = after[3]
    assert new is not None
    assert (
        cosine(new, embedders.get(minilm).embed(["Completely different words about the ocean."])[0])
        >= 0.999
    )
    assert cosine(after[1], before[1]) == pytest.approx(1.0)  # type: ignore[arg-type]

    # In keep mode the worker clears blank content itself.
    conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s, clear_on_update => false)", (minilm,)
    )
    conn.execute("UPDATE docs SET body = '   ' WHERE id = 4")
    assert stored(conn)[4] is not None
    run_once()
    assert stored(conn)[4] is None
    assert messages(conn) == []


def test_a_row_deleted_while_in_flight_is_acknowledged(
    conn: Conn, docs: int, in_flight: InFlight
) -> None:
    batch, queue = in_flight.lease()
    conn.execute("DELETE FROM docs WHERE id = 2")
    in_flight.finish(batch, queue)
    assert messages(conn) == []
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)
    assert [k for k, v in stored(conn).items() if v is not None] == [1, 3, 4]


def test_a_row_updated_while_in_flight_keeps_the_newest_contents_vector(
    conn: Conn, docs: int, run_once: Callable[..., Worker], minilm: str, in_flight: InFlight
) -> None:
    conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s, clear_on_update => false)", (minilm,)
    )
    batch, queue = in_flight.lease()  # loads the old text of row 1
    conn.execute("UPDATE docs SET body = 'Newest text: volcanoes erupt lava.' WHERE id = 1")
    in_flight.finish(batch, queue)
    assert batch.rows[(docs, "1")].state is RowState.STALE
    assert stored(conn)[1] is None  # the stale vector was not written
    run_once()  # the update's own job
    final = stored(conn)[1]
    assert final is not None
    newest = in_flight.embedders.get(minilm).embed(["Newest text: volcanoes erupt lava."])[0]
    assert cosine(final, newest) >= 0.999


def test_a_poisoned_row_is_dead_lettered_while_its_neighbours_are_embedded(
    conn: Conn, run_once: Callable[..., Worker], minilm: str
) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute(
        "CREATE FUNCTION picky(d docs) RETURNS text LANGUAGE plpgsql STABLE AS $$ BEGIN"
        " IF d.body = 'poison' THEN RAISE EXCEPTION 'cannot read row %', d.id; END IF;"
        " RETURN d.body; END $$"
    )
    conn.execute(
        "INSERT INTO docs SELECT g, CASE WHEN g = 5 THEN 'poison' ELSE 'text ' || g END FROM generate_series(1, 10) g"
    )
    conn.execute("SELECT embeddings.watch('docs', 'picky', model => %s)", (minilm,))

    run_once()

    assert [k for k, v in stored(conn).items() if v is None] == [5]
    failures = conn.execute(
        "SELECT target, row_key, attempts, last_error, message FROM embeddings.failures"
    ).fetchall()
    assert len(failures) == 1
    target, row_key, attempts, error, message = failures[0]
    assert (target, row_key, attempts) == ("public.docs.embedding", 5, 3)
    assert "cannot read row 5" in error
    assert messages(conn) == []

    # Fixed (the UPDATE succeeds although the old content cannot be read), then retried.
    conn.execute("UPDATE docs SET body = 'cured' WHERE id = 5")
    assert conn.execute("SELECT embeddings.retry_failures()").fetchone() == (1,)
    assert message in messages(conn)
    run_once()
    assert messages(conn) == []
    assert stored(conn)[5] is not None
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)


def test_jobs_for_unregistered_targets_are_dead_lettered_and_nothing_runs(
    conn: Conn, docs: int, run_once: Callable[..., Worker]
) -> None:
    conn.execute("CREATE TABLE secrets (id int PRIMARY KEY, body text, embedding halfvec(384))")
    conn.execute("INSERT INTO secrets VALUES (1, 'do not read')")
    for message in (
        '{"id": 1, "schema": "public", "table": "secrets", "contentFunction": "body", "embeddingColumn": "embedding"}',
        '{"id": 1, "schema": "pg_catalog", "table": "pg_authid", "contentFunction": "rolpassword", "embeddingColumn": "x"}',
        '{"target": 999, "keys": [1]}',
        '"not even an object"',
    ):
        conn.execute("SELECT pgmq.send('embedding_jobs', %s::jsonb)", (message,))
    run_once()
    rows = conn.execute("SELECT target, last_error FROM embeddings.failures ORDER BY id").fetchall()
    assert [r[0] for r in rows] == [
        "public.secrets.embedding",
        "pg_catalog.pg_authid.x",
        "target 999",
        "unknown",
    ]
    assert "register it with: SELECT embeddings.watch('public.secrets'" in rows[0][1]
    assert conn.execute("SELECT embedding FROM secrets").fetchone() == (None,)
    assert conn.execute("SELECT count(*) FROM pgmq.a_embedding_jobs").fetchone() == (4,)


def test_the_fix_for_an_unregistered_table_watches_that_table_whatever_its_name(
    conn: Conn, run_once: Callable[..., Worker]
) -> None:
    """A Supabase-shaped job names a table the producer (a tenant) named: the watch() its
    failure tells an operator to run quotes it, so that, run as shown, it registers exactly
    that table and nothing else runs."""
    hostile = "Docs', 'body'); DROP TABLE keep; --"
    conn.execute("CREATE TABLE keep (id int)")
    conn.execute(
        sql.SQL(
            "CREATE TABLE public.{} (id int PRIMARY KEY, body text, embedding halfvec(384))"
        ).format(sql.Identifier(hostile))
    )
    message = {
        "id": 1,
        "schema": "public",
        "table": hostile,
        "contentFunction": "body",
        "embeddingColumn": "embedding",
    }
    conn.execute("SELECT pgmq.send('embedding_jobs', %s)", (Jsonb(message),))
    run_once()
    failure = conn.execute("SELECT target, last_error FROM embeddings.failures").fetchone()
    assert failure is not None
    named, error = failure
    assert named == "public.\"Docs', 'body'); DROP TABLE keep; --\".embedding"
    fix = error.split("register it with: ", 1)[1]
    assert fix == (
        "SELECT embeddings.watch('public.\"Docs'', ''body''); DROP TABLE keep; --\"', 'body', "
        "embedding_column => 'embedding', triggers => false);"
    )
    conn.execute(fix)
    watched = conn.execute("SELECT source::oid FROM embeddings.targets").fetchall()
    table = sql.Identifier("public", hostile).as_string(conn)
    assert watched == [(conn.execute("SELECT %s::regclass::oid", (table,)).fetchone() or (0,))]
    assert conn.execute("SELECT to_regclass('public.keep')").fetchone() == ("keep",)


def test_jobs_in_the_supabase_shape_are_processed_for_registered_targets(
    conn: Conn, run_once: Callable[..., Worker], minilm: str
) -> None:
    conn.execute(
        "CREATE TABLE documents (id int PRIMARY KEY, title text, content text, embedding halfvec(384))"
    )
    conn.execute(
        "CREATE FUNCTION embedding_input(doc documents) RETURNS text LANGUAGE plpgsql IMMUTABLE"
        " AS $$ BEGIN RETURN '# ' || doc.title || E'\\n\\n' || doc.content; END $$"
    )
    conn.execute(
        "INSERT INTO documents VALUES (1, 'Cats', 'They purr.'), (2, 'Dogs', 'They bark.')"
    )
    conn.execute(
        "SELECT embeddings.watch('documents', 'embedding_input', model => %s, triggers => false)",
        (minilm,),
    )
    assert messages(conn) != []  # watch() queued the existing rows in our own shape
    clear_queue(conn)
    for key in (1, 2):
        conn.execute(
            "SELECT pgmq.send('embedding_jobs', jsonb_build_object('id', %s::int, 'schema', 'public',"
            " 'table', 'documents', 'contentFunction', 'embedding_input', 'embeddingColumn', 'embedding'))",
            (key,),
        )
    run_once()
    assert all(v is not None for v in stored(conn, "documents").values())
    assert messages(conn) == []


def test_invalid_keys_are_dead_lettered_and_the_rest_embedded(
    conn: Conn, docs: int, run_once: Callable[..., Worker]
) -> None:
    clear_queue(conn)
    conn.execute(
        """SELECT pgmq.send('embedding_jobs', jsonb_build_object('target', %s, 'keys', '[1, "x", 2]'::jsonb))""",
        (docs,),
    )
    run_once()
    assert [k for k, v in stored(conn).items() if v is not None] == [1, 2]
    assert conn.execute("SELECT row_key, attempts FROM embeddings.failures").fetchall() == [
        ("x", 1)
    ]


def test_a_target_whose_model_is_missing_is_deferred_not_failed(
    conn: Conn, run_once: Callable[..., Worker]
) -> None:
    stores.watch_absent_model(conn)
    run_once(
        expect=exits.UNSERVED
    )  # --once: the deferred job is invisible for a minute, so the run ends
    row = conn.execute(
        "SELECT read_ct, vt > now() + interval '30 seconds' FROM pgmq.q_embedding_jobs_backfill"
    ).fetchone()
    assert row == (0, True)  # put back without spending an attempt
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)


def test_a_dimension_mismatch_is_deferred_for_that_target_only(
    conn: Conn, docs: int, run_once: Callable[..., Worker]
) -> None:
    # A model the registry says is 384-d but whose files say otherwise cannot happen with our
    # own registry; a column altered after watch() can.
    stores.watched_table(conn, "all-MiniLM-L6-v2", "VALUES (1, 'hello')", "wide")
    conn.execute("ALTER TABLE wide ALTER COLUMN embedding TYPE halfvec(768)")
    run_once(expect=exits.UNSERVED)
    assert all(v is not None for v in stored(conn).values())  # the other target proceeds
    assert conn.execute("SELECT embedding FROM wide").fetchone() == (None,)
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)


def test_a_dropped_content_function_defers_its_target_only(
    conn: Conn, docs: int, run_once: Callable[..., Worker], caplog: pytest.LogCaptureFixture
) -> None:
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    conn.execute(
        "CREATE FUNCTION note_text(n notes) RETURNS text LANGUAGE sql IMMUTABLE"
        " AS $$ SELECT n.body $$"
    )
    conn.execute("SELECT embeddings.watch('notes', 'note_text', model => 'all-MiniLM-L6-v2')")
    conn.execute("DROP FUNCTION note_text(notes)")
    conn.execute("INSERT INTO notes VALUES (1, 'hello')")  # the write still succeeds
    caplog.set_level(logging.INFO, logger="worker")
    run_once(expect=exits.UNSERVED)
    assert all(v is not None for v in stored(conn).values())  # the other target proceeds
    assert conn.execute("SELECT embedding FROM notes").fetchone() == (None,)
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)
    assert "its content function was dropped" in caplog.text  # as status says


def test_older_pgmq_without_last_read_at_works(
    conn: Conn, docs: int, run_once: Callable[..., Worker]
) -> None:
    """Supabase ships pgmq 1.4/1.5, whose queue tables lack last_read_at (added in 1.8)."""
    for lane in ("q_embedding_jobs", "q_embedding_jobs_backfill"):
        conn.execute(f"ALTER TABLE pgmq.{lane} DROP COLUMN last_read_at")
    run_once()
    assert all(v is not None for v in stored(conn).values())
    assert messages(conn) == []


def test_an_existing_vector_column_is_filled_too(
    conn: Conn, run_once: Callable[..., Worker], embedders: LoadedModels, minilm: str
) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text, embedding vector(384))")
    conn.execute("INSERT INTO docs VALUES (1, 'full precision please')")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (minilm,))
    run_once()
    vector = stored(conn)[1]
    assert vector is not None
    expected = embedders.get(minilm).embed(["full precision please"])[0]
    assert np.allclose(vector, expected, atol=1e-6)  # no half-precision rounding here


def test_a_finished_worker_leaves_no_file_descriptor_open(
    docs: int, settings: Settings, embedders: LoadedModels
) -> None:
    """Each Worker's wake pipe is closed once it stopped: a process (the test suite, an embedding
    host) running many workers in turn ran out of select()able descriptors."""
    Worker(settings, once=True, embedders=embedders, progress=False, handle_signals=False).run()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        Worker(settings, once=True, embedders=embedders, progress=False, handle_signals=False).run()
    assert len(os.listdir("/proc/self/fd")) == before
