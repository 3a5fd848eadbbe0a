"""Routine DDL on a watched table never breaks the application's writes (issue 12 §4), and
generated content columns work (§5). Renames are followed by the schema-change event trigger;
what cannot be followed becomes a visible, logged deferral."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.support import stores
from tests.support.jobs import JOBS, queued_keys
from tests.support.process import wait_for
from worker import exits
from worker.pipeline import write
from worker.pipeline.targets import load
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]


@pytest.fixture
def docs(conn: Conn, minilm: str) -> int:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text, note text)")
    conn.execute("INSERT INTO docs VALUES (1, 'first text', NULL)")
    row = conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (minilm,)).fetchone()
    assert row is not None
    return int(row[0])


def embedded(
    conn: Conn, table: str = "docs", key: str = "id", vec: str = "embedding"
) -> dict[int, bool]:
    return dict(conn.execute(f"SELECT {key}, {vec} IS NOT NULL FROM {table} ORDER BY 1").fetchall())


@pytest.mark.parametrize(
    ("ddl", "table", "key", "content", "vec"),
    [
        ("ALTER TABLE docs RENAME COLUMN body TO content", "docs", "id", "content", "embedding"),
        ("ALTER TABLE docs RENAME COLUMN id TO doc_id", "docs", "doc_id", "body", "embedding"),
        ("ALTER TABLE docs RENAME COLUMN embedding TO vec", "docs", "id", "body", "vec"),
        ("ALTER TABLE docs RENAME TO papers", "papers", "id", "body", "embedding"),
        (
            "CREATE SCHEMA archive; ALTER TABLE docs SET SCHEMA archive",
            "archive.docs",
            "id",
            "body",
            "embedding",
        ),
        ("ALTER TABLE docs ALTER COLUMN body TYPE varchar(200)", "docs", "id", "body", "embedding"),
    ],
)
def test_writes_keep_working_and_rows_get_embedded_after(
    conn: Conn,
    docs: int,
    run_once: Callable[..., Worker],
    ddl: str,
    table: str,
    key: str,
    content: str,
    vec: str,
) -> None:
    conn.execute(ddl)
    conn.execute(f"INSERT INTO {table} ({key}, {content}) VALUES (2, 'second text')")
    conn.execute(f"UPDATE {table} SET {content} = 'first text, edited' WHERE {key} = 1")
    conn.execute(f"UPDATE {table} SET note = 'unrelated' WHERE {key} = 2")
    assert queued_keys(conn, docs) == [1, 2, 1]
    run_once()
    assert embedded(conn, table, key, vec) == {1: True, 2: True}
    registered = conn.execute(
        "SELECT content_column, embedding_column, key_columns::text[], problem FROM embeddings.targets"
    ).fetchone()
    assert registered == (content, vec, [key], None)


def test_dropping_the_content_column_defers_the_target_visibly(
    conn: Conn, docs: int, run_once: Callable[..., Worker]
) -> None:
    with conn.cursor() as cur:
        notices: list[str] = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        cur.execute("ALTER TABLE docs DROP COLUMN body")
    assert any("no longer embedded" in n and "body was dropped" in n for n in notices)
    conn.execute("INSERT INTO docs (id, note) VALUES (3, 'writes still work')")
    conn.execute("UPDATE docs SET note = 'and updates' WHERE id = 1")
    row = conn.execute("SELECT problem FROM embeddings.targets").fetchone()
    assert row is not None and "content column body was dropped" in str(row[0])
    target = load(conn)[docs]
    assert "body was dropped" in str(target.problem())
    status = conn.execute("SELECT problem FROM embeddings.status").fetchone()
    assert status is not None and "body was dropped" in str(status[0])
    # Its queued job waits (deferred, not failed) until the target is watched again.
    run_once(expect=exits.UNSERVED)
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)
    conn.execute("ALTER TABLE docs ADD COLUMN body text")
    conn.execute("UPDATE docs SET body = 'new content'")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (target.model,))
    assert conn.execute("SELECT problem FROM embeddings.targets").fetchone() == (None,)
    run_once()
    assert embedded(conn) == {1: True, 3: True}


@pytest.mark.parametrize("followed", [True, False], ids=["event trigger", "no event trigger"])
@pytest.mark.parametrize(
    ("retyped", "back", "refused"),
    [
        (
            "bytea USING convert_to(body, 'UTF8')",
            "text USING convert_from(body, 'UTF8')",
            "is bytea: documents are chunked",
        ),
        ("integer USING length(body)", "text USING 'text ' || body", "has type integer, not text"),
        ("jsonb USING to_jsonb(body)", "text USING body #>> '{}'", "has type jsonb, not text"),
        ("xml USING body::xml", "text USING body::text", "has type xml, not text"),
    ],
    ids=["bytea", "integer", "jsonb", "xml"],
)
def test_a_content_column_retyped_to_what_watch_refuses_holds_its_jobs_until_it_is_back(
    conn: Conn,
    docs: int,
    run_once: Callable[..., Worker],
    followed: bool,
    retyped: str,
    back: str,
    refused: str,
) -> None:
    """A content column retyped to a type watch() refuses for the target: its rows' text would
    be another thing's (a bytea's base64, the integer, quoted JSON), and the worker embedded
    it. It is the target's problem, with or without the event trigger that follows schema
    changes (read from the catalog as it is now); its jobs are held, and embedded once the
    column is text again."""
    if not followed:
        conn.execute("ALTER EVENT TRIGGER embeddings_follow_schema_changes DISABLE")
    conn.execute(f"ALTER TABLE docs ALTER COLUMN body TYPE {retyped}")
    conn.execute("INSERT INTO docs (id, body) SELECT 2, body FROM docs WHERE id = 1")
    (problem,) = conn.execute("SELECT problem FROM embeddings.status").fetchone() or (None,)
    assert problem is not None and f"content column body {refused}" in problem, problem
    assert [r[0] for r in conn.execute("SELECT state FROM embeddings.stopped")] == ["problem"]
    assert f"content column body {refused}" in str(load(conn)[docs].problem())

    run_once(expect=exits.UNSERVED)
    assert embedded(conn) == {1: False, 2: False}  # neither row's base64, number or JSON
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)
    assert queued_keys(conn, docs) == [1, 2]  # held, not lost

    conn.execute(f"ALTER TABLE docs ALTER COLUMN body TYPE {back}")
    # (held still, by the worker's deferral, until a worker serves the jobs)
    assert [r[0] for r in conn.execute("SELECT state FROM embeddings.stopped")] == ["held"]
    run_once()
    assert embedded(conn) == {1: True, 2: True}
    assert conn.execute("SELECT problem FROM embeddings.status").fetchone() == (None,)


def test_a_document_target_s_content_column_may_become_bytea(
    conn: Conn, run_once: Callable[..., Worker], minilm: str
) -> None:
    """bytea is a chunked target's documents (watch()'s rule): retyped to it, no problem."""
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    stores.watch_with(conn, "docs", "body", model=minilm, chunk_tokens=64)
    conn.execute("ALTER TABLE docs ALTER COLUMN body TYPE bytea USING convert_to(body, 'UTF8')")
    conn.execute("INSERT INTO docs VALUES (1, convert_to('# Cats\n\nThey sleep a lot.', 'UTF8'))")
    assert conn.execute("SELECT problem FROM embeddings.status").fetchone() == (None,)
    run_once()
    assert conn.execute("SELECT count(*) FROM docs_chunks").fetchone() == (1,)


def test_a_generated_content_column_is_watched_and_follows_its_inputs(
    conn: Conn, run_once: Callable[..., Worker], minilm: str
) -> None:
    conn.execute(
        "CREATE TABLE docs (id int PRIMARY KEY, title text, body text,"
        " content text GENERATED ALWAYS AS (coalesce(title, '') || ': ' || coalesce(body, '')) STORED)"
    )
    conn.execute("INSERT INTO docs (id, title, body) VALUES (1, 'Cats', 'They sleep a lot.')")
    target = stores.watch_with(conn, "docs", "content", model=minilm)
    conn.execute("INSERT INTO docs (id, title, body) VALUES (2, 'Dogs', 'They bark.')")
    assert queued_keys(conn, target) == [1, 2]
    run_once()
    assert embedded(conn) == {1: True, 2: True}
    # Changing an input of the expression changes the content: cleared at once, re-queued.
    conn.execute("UPDATE docs SET body = 'They purr.' WHERE id = 1")
    assert embedded(conn) == {1: False, 2: True}
    assert queued_keys(conn, target) == [1]
    run_once()
    assert embedded(conn) == {1: True, 2: True}


def test_two_embeddings_of_one_table_are_independent(
    conn: Conn, run_once: Callable[..., Worker], minilm: str
) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, title text, body text)")
    conn.execute("INSERT INTO docs VALUES (1, 'Cats', 'They sleep.')")
    first = conn.execute(
        "SELECT embeddings.watch('docs', 'title', embedding_column => 'title_embedding', model => %s)",
        (minilm,),
    ).fetchone()
    second = conn.execute(
        "SELECT embeddings.watch('docs', 'body', embedding_column => 'body_embedding', model => %s)",
        (minilm,),
    ).fetchone()
    assert first is not None and second is not None
    run_once()
    conn.execute("UPDATE docs SET body = 'They purr.'")
    assert queued_keys(conn, first[0]) == []
    assert queued_keys(conn, second[0]) == [1]
    assert conn.execute(
        "SELECT title_embedding IS NOT NULL, body_embedding IS NOT NULL FROM docs"
    ).fetchone() == (True, False)
    status = conn.execute(
        "SELECT target, pending_jobs FROM embeddings.status ORDER BY 1"
    ).fetchall()
    assert status == [("public.docs.body_embedding", 1), ("public.docs.title_embedding", 0)]
    run_once()
    assert conn.execute(
        "SELECT title_embedding IS NOT NULL, body_embedding IS NOT NULL FROM docs"
    ).fetchone() == (True, True)


def test_watching_again_after_the_content_column_was_re_added_re_embeds_every_row(
    conn: Conn, docs: int, run_once: Callable[..., Worker]
) -> None:
    """The user's fix for a dropped content column: added again, refilled before watch() again.
    No row keeps the dropped column's vector (it did: watch() saw the same column name and
    enqueued only rows without a vector); a row left without content holds none."""
    target = load(conn)[docs]
    conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s, clear_on_update => false)",
        (target.model,),
    )
    conn.execute("INSERT INTO docs (id, body) VALUES (2, 'second text')")
    run_once()
    old = dict(conn.execute("SELECT id, embedding::text FROM docs").fetchall())
    conn.execute("ALTER TABLE docs DROP COLUMN body")
    conn.execute("ALTER TABLE docs ADD COLUMN body text")
    conn.execute("UPDATE docs SET body = 'refilled text' WHERE id = 1")  # row 2 stays blank
    conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s, clear_on_update => false)",
        (target.model,),
    )
    run_once()
    now = dict(conn.execute("SELECT id, embedding::text FROM docs").fetchall())
    assert now[1] is not None and now[1] != old[1], "row 1 kept the old content's vector"
    assert now[2] is None, "row 2 has no content but kept a vector"
    assert conn.execute(f"SELECT count(*) FROM {JOBS}").fetchone() == (0,)


def test_a_rename_while_a_write_holds_the_registration_waits_instead_of_deadlocking(
    conn: Conn, dsn: str, docs: int, run_once: Callable[..., Worker]
) -> None:
    # The worker's write locks the registration, then writes the table; a rename locks the
    # table, then (following it) the registration. Each must wait for the other in line.
    run_once()
    ddl_errors: list[BaseException] = []

    def rename() -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as ddl:
                ddl.execute("ALTER TABLE docs RENAME COLUMN body TO content")
        except psycopg.Error as exc:
            ddl_errors.append(exc)

    target = load(conn)[docs]
    with psycopg.connect(dsn) as writer:
        assert write._lock_targets(writer, {target: []}) == (set(), set())
        held = conn.execute(
            "SELECT mode FROM pg_locks WHERE pid = %s AND relation = 'docs'::regclass",
            (writer.info.backend_pid,),
        ).fetchall()
        assert ("RowExclusiveLock",) in held  # the write's own lock, taken before the registration
        ddl = threading.Thread(target=rename)
        ddl.start()
        wait_for(
            lambda: (
                conn.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND query LIKE 'ALTER TABLE docs%'"
                ).fetchone()
                == (1,)
            )
        )
        writer.execute("UPDATE docs SET embedding = embedding WHERE id = 1")  # as the write does
        writer.commit()
        ddl.join(timeout=60)
    assert not ddl.is_alive()
    assert ddl_errors == []
    assert conn.execute(
        "SELECT content_column FROM embeddings.targets WHERE id = %s", (docs,)
    ).fetchone() == ("content",)
