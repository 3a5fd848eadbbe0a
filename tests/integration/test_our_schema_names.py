"""Renaming schema embeddings or embeddings_internal (QA 5b, finding 2), or pgmq (QA restore2,
finding 3): accepted, every write to a watched table (pgmq: every read of the queues) then
failed, and doctor said the schema was not installed. The event trigger refuses the rename;
where there is none (an install without a superuser, or pgmq renamed before install), doctor
names the renamed schema and the statement that renames it back."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from tests.support.jobs import queued_keys
from worker.cli import doctor
from worker.config import Settings

Conn = psycopg.Connection[Any]


@pytest.fixture
def watched(conn: Conn) -> Conn:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('docs', 'body')")
    return conn


@pytest.mark.parametrize("ours", ["embeddings", "embeddings_internal"])
def test_renaming_our_schema_is_refused_and_writes_go_on(watched: Conn, ours: str) -> None:
    with pytest.raises(psycopg.errors.ObjectInUse) as refused:
        watched.execute(f"ALTER SCHEMA {ours} RENAME TO emb2")

    assert "schema emb2 holds embed-worker's tables or functions" in str(refused.value)
    assert refused.value.diag.message_hint and "Keep its name" in refused.value.diag.message_hint
    assert watched.execute("SELECT to_regnamespace(%s) IS NOT NULL", (ours,)).fetchone() == (True,)
    watched.execute("INSERT INTO docs VALUES (1, 'a')")
    assert queued_keys(watched, 1) == [1]


def test_renaming_a_watched_tables_schema_is_still_followed(conn: Conn) -> None:
    conn.execute("CREATE SCHEMA app")
    conn.execute("CREATE TABLE app.docs (id bigint PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('app.docs', 'body')")
    conn.execute("ALTER SCHEMA app RENAME TO app2")
    conn.execute("INSERT INTO app2.docs VALUES (1, 'a')")
    assert queued_keys(conn, 1) == [1]


def test_doctor_names_a_schema_of_ours_renamed_without_the_event_trigger(
    watched: Conn, dsn: str
) -> None:
    watched.execute("DROP EVENT TRIGGER embeddings_follow_schema_changes")  # as installed without
    watched.execute("ALTER SCHEMA embeddings RENAME TO emb2")

    found = doctor.check(dsn, Settings(database_url=dsn))

    (said,) = [f for f in found if f.check == "schema"]
    assert said.level == "FAIL" and "is named emb2" in said.detail
    assert said.fix == "rename it back: ALTER SCHEMA emb2 RENAME TO embeddings"


def test_renaming_pgmq_is_refused_and_its_owner_may_still_change(watched: Conn) -> None:
    """pgmq's schema holds our queues, and our functions (and pgmq's own) name it: renamed, the
    worker, sweep() and status failed on every queue."""
    with pytest.raises(psycopg.errors.ObjectInUse) as refused:
        watched.execute("ALTER SCHEMA pgmq RENAME TO pgmq2")

    assert "schema pgmq2 is pgmq's" in str(refused.value)
    assert refused.value.diag.message_hint and "Keep its name" in refused.value.diag.message_hint
    watched.execute("INSERT INTO docs VALUES (1, 'a')")
    watched.execute("SELECT embeddings.sweep()")
    assert queued_keys(watched, 1) == [1]
    # What else ALTER SCHEMA does to it is not refused.
    keeper = f"keeper_{uuid.uuid4().hex[:8]}"
    watched.execute(f"CREATE ROLE {keeper}")
    try:
        watched.execute(f"ALTER SCHEMA pgmq OWNER TO {keeper}")
        watched.execute("ALTER SCHEMA pgmq OWNER TO CURRENT_USER")
    finally:
        watched.execute(f"DROP ROLE {keeper}")


def test_doctor_names_pgmq_renamed_without_the_event_trigger(watched: Conn, dsn: str) -> None:
    watched.execute("DROP EVENT TRIGGER embeddings_follow_schema_changes")  # as installed without
    watched.execute("ALTER SCHEMA pgmq RENAME TO queues")

    found = doctor.check(dsn, Settings(database_url=dsn))

    (said,) = [f for f in found if f.check == "schema"]
    assert said.level == "FAIL" and "pgmq's schema, which holds" in said.detail
    assert "is named queues" in said.detail
    assert said.fix == "rename it back: ALTER SCHEMA queues RENAME TO pgmq"
    watched.execute(said.fix.split(": ", 1)[1])
    found = doctor.check(dsn, Settings(database_url=dsn))
    assert [f.level for f in found if f.check == "schema"] == ["ok"]


def test_doctor_names_pgmq_renamed_before_install(empty_dsn: str) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pgmq")
        conn.execute("ALTER SCHEMA pgmq RENAME TO queues")

    found = doctor.check(empty_dsn, Settings(database_url=empty_dsn))

    (said,) = [f for f in found if f.check == "schema"]
    assert said.fix == "rename it back: ALTER SCHEMA queues RENAME TO pgmq"
