"""Dropping a watched table or its embedding column forgets the target and its queued jobs."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from tests.support.jobs import messages

Conn = psycopg.Connection[Any]


@pytest.fixture
def two_targets(conn: Conn) -> tuple[int, int]:
    """docs and other, both watched, each with queued jobs."""
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("CREATE TABLE other (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs VALUES (1, 'a'), (2, 'b')")
    conn.execute("INSERT INTO other VALUES (1, 'a')")
    row = conn.execute(
        "SELECT embeddings.watch('docs', 'body'), embeddings.watch('other', 'body')"
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def target_ids(conn: Conn) -> list[int]:
    return [r[0] for r in conn.execute("SELECT id FROM embeddings.targets ORDER BY id")]


def test_dropping_a_watched_table_forgets_it_and_its_jobs(
    conn: Conn, two_targets: tuple[int, int]
) -> None:
    docs, other = two_targets
    conn.execute(
        "INSERT INTO embeddings.failures (target_id, target, queue, message, attempts, last_error)"
        " VALUES (%s, 'public.docs.embedding', 'embedding_jobs', '{}', 5, 'boom')",
        (docs,),
    )
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))

    conn.execute("DROP TABLE docs")

    assert target_ids(conn) == [other]
    assert [m["target"] for m in messages(conn)] == [other]
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)
    assert any(f"target {docs} is no longer watched" in n for n in notices), notices
    assert [r[0] for r in conn.execute("SELECT target FROM embeddings.status")] == [
        "public.other.embedding"
    ]


def test_dropping_the_embedding_column_forgets_the_target_and_its_triggers(
    conn: Conn, two_targets: tuple[int, int]
) -> None:
    _docs, other = two_targets
    conn.execute("ALTER TABLE docs DROP COLUMN embedding")

    assert target_ids(conn) == [other]
    assert [m["target"] for m in messages(conn)] == [other]
    assert conn.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'docs'::regclass AND NOT tgisinternal"
    ).fetchone() == (0,)
    conn.execute("INSERT INTO docs VALUES (3, 'c')")  # no trigger left to enqueue it
    assert [m["target"] for m in messages(conn)] == [other]
    assert conn.execute("SELECT count(*) FROM docs").fetchone() == (3,)


def test_other_drops_leave_targets_alone(conn: Conn, two_targets: tuple[int, int]) -> None:
    conn.execute("CREATE TABLE scratch (id int, embedding text)")
    conn.execute("ALTER TABLE docs ADD COLUMN note text")
    conn.execute("ALTER TABLE scratch DROP COLUMN embedding")
    conn.execute("ALTER TABLE docs DROP COLUMN note")
    conn.execute("DROP TABLE scratch")
    conn.execute("DROP INDEX IF EXISTS no_such_index")

    assert target_ids(conn) == list(two_targets)
    assert len(messages(conn)) == 2


def test_without_the_event_trigger_unwatch_dropped_forgets_them(
    conn: Conn, two_targets: tuple[int, int]
) -> None:
    docs, other = two_targets
    conn.execute("ALTER EVENT TRIGGER embeddings_forget_dropped DISABLE")
    conn.execute("DROP TABLE docs")
    assert target_ids(conn) == [docs, other]

    assert conn.execute("SELECT embeddings.unwatch_dropped()").fetchone() == (1,)
    assert target_ids(conn) == [other]
    assert [m["target"] for m in messages(conn)] == [other]
    assert conn.execute("SELECT embeddings.unwatch_dropped()").fetchone() == (0,)


def test_a_role_without_rights_on_our_schema_can_drop_its_watched_table(conn: Conn) -> None:
    owner = f"app_owner_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {owner}")
    try:
        conn.execute(f"GRANT CREATE ON SCHEMA public TO {owner}")
        conn.execute(f"SET ROLE {owner}")
        conn.execute("CREATE TABLE mine (id int PRIMARY KEY, body text)")
        conn.execute("RESET ROLE")
        conn.execute("SELECT embeddings.watch('mine', 'body')")
        conn.execute(f"ALTER TABLE mine OWNER TO {owner}")
        conn.execute(f"SET ROLE {owner}")
        conn.execute("INSERT INTO mine VALUES (1, 'text')")
        conn.execute("DROP TABLE mine")
        conn.execute("RESET ROLE")
        assert target_ids(conn) == []
        assert messages(conn) == []
    finally:
        conn.execute("RESET ROLE")
        conn.execute(f"DROP OWNED BY {owner}")
        conn.execute(f"DROP ROLE {owner}")
