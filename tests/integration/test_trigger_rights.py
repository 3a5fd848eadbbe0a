"""Who may enqueue (issue 12 §7): only roles that may write a watched table, by writing it,
and only for that table; content functions never run with more rights than the table owner's
(tests/security has the hostile owner). Real roles, real grants."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests.support.jobs import messages, queued_keys

Conn = psycopg.Connection[Any]


@pytest.fixture
def roles(conn: Conn) -> Iterator[dict[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    names = {kind: f"{kind}_{suffix}" for kind in ("owner", "writer", "stranger")}
    for name in names.values():
        conn.execute(f"CREATE ROLE {name} LOGIN")
    conn.execute(f"GRANT CREATE ON SCHEMA public TO {names['owner']}")
    yield names
    for name in names.values():
        conn.execute(f"DROP OWNED BY {name} CASCADE")
        conn.execute(f"DROP ROLE {name}")


def connect_as(dsn: str, role: str) -> psycopg.Connection[Any]:
    return psycopg.connect(make_conninfo(dsn, user=role), autocommit=True)


@pytest.fixture
def docs(conn: Conn, dsn: str, roles: dict[str, str]) -> int:
    with connect_as(dsn, roles["owner"]) as owner:
        owner.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
        owner.execute(f"GRANT SELECT, INSERT, UPDATE ON docs TO {roles['writer']}")
    row = conn.execute("SELECT embeddings.watch('docs', 'body')").fetchone()
    assert row is not None
    return int(row[0])


def test_a_writer_enqueues_by_writing_and_no_other_way(
    conn: Conn, dsn: str, roles: dict[str, str], docs: int
) -> None:
    with connect_as(dsn, roles["writer"]) as writer:
        writer.execute("INSERT INTO docs VALUES (1, 'written by the app')")
        writer.execute("UPDATE docs SET body = 'edited by the app' WHERE id = 1")
        for attempt in (
            "SELECT embeddings_internal.enqueue_keys(%s, ARRAY[99])",
            "SELECT pgmq.send('embedding_jobs', jsonb_build_object('target', %s::int, 'keys', '[99]'::jsonb))",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                writer.execute(attempt, (docs,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            writer.execute(f"SELECT embeddings.embeddings_{docs}_insert()")
    assert queued_keys(conn, docs) == [1, 1]


def test_a_role_that_cannot_write_the_table_cannot_enqueue_for_it(
    conn: Conn, dsn: str, roles: dict[str, str], docs: int
) -> None:
    with connect_as(dsn, roles["stranger"]) as stranger:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            stranger.execute("INSERT INTO docs VALUES (2, 'not allowed')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            stranger.execute("SELECT embeddings_internal.enqueue_keys(%s, ARRAY[2])", (docs,))
        # Its own table with its own trigger cannot reach ours either.
        stranger.execute("CREATE TEMP TABLE mine (id int)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            stranger.execute(f"SELECT embeddings.embeddings_{docs}_update()")
    assert messages(conn) == []


def test_a_content_function_runs_with_the_table_owners_rights(
    conn: Conn, dsn: str, roles: dict[str, str]
) -> None:
    with connect_as(dsn, roles["owner"]) as owner:
        owner.execute("CREATE TABLE notes (id bigint PRIMARY KEY, body text)")
        owner.execute(f"GRANT SELECT, INSERT, UPDATE ON notes TO {roles['writer']}")
        owner.execute(
            "CREATE FUNCTION note_text(n notes) RETURNS text LANGUAGE plpgsql STABLE AS $$"
            " BEGIN RAISE NOTICE 'content function ran as %', current_user; RETURN n.body; END $$"
        )
    target = conn.execute("SELECT embeddings.watch('notes', 'note_text')").fetchone()
    assert target is not None
    ran_as: list[str] = []
    # Written by the writer, and by a superuser: the function runs as the owner both times.
    for who in (roles["writer"], None):
        with connect_as(dsn, who) if who else psycopg.connect(dsn, autocommit=True) as writer:
            writer.add_notice_handler(lambda d: ran_as.append(d.message_primary or ""))
            writer.execute("INSERT INTO notes VALUES (%s, 'hello')", (len(ran_as) + 1,))
    assert ran_as and set(ran_as) == {f"content function ran as {roles['owner']}"}
    assert queued_keys(conn, target[0]) == [1, 2]
    # The wrapper through which the triggers evaluate it is no writer's to call (it would run
    # the owner's function on rows of the caller's making).
    with (
        connect_as(dsn, roles["writer"]) as writer,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        writer.execute(
            f"SELECT embeddings.embeddings_{target[0]}_content(ROW(99, 'x', NULL)::notes)"
        )
