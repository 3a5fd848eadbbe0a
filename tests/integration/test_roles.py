"""The worker as a least-privilege role, on tables with row-level security: it reads and writes
them through functions that run as their owner, with no privilege on them (docs/security.md)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests.support.jobs import messages
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]


@pytest.fixture
def worker_role(conn: Conn) -> Iterator[str]:
    name = f"embed_worker_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {name} LOGIN")
    yield name
    conn.execute(f"DROP OWNED BY {name}")
    conn.execute(f"DROP ROLE {name}")


def test_grant_worker_needs_an_existing_role(conn: Conn) -> None:
    with pytest.raises(psycopg.errors.UndefinedObject, match='role "nobody_here" does not exist'):
        conn.execute("SELECT embeddings.grant_worker('nobody_here')")
    with pytest.raises(psycopg.errors.NullValueNotAllowed, match="role_name must not be NULL"):
        conn.execute("SELECT embeddings.grant_worker(NULL)")


@pytest.mark.parametrize("role", ["pg_monitor", "pg_read_all_data", "pg_database_owner", "public"])
def test_grant_worker_refuses_a_role_every_member_of_which_would_be_a_worker(
    conn: Conn, role: str
) -> None:
    """Predefined roles and PUBLIC (tests/security/test_readable_tables.py tries them all)."""
    with pytest.raises(psycopg.errors.ReservedName, match="cannot be a worker role") as refused:
        conn.execute("SELECT embeddings.grant_worker(%s)", (role,))
    assert "CREATE ROLE embed_worker" in (refused.value.diag.message_hint or "")


def test_the_worker_runs_with_least_privilege_under_row_level_security(
    conn: Conn, dsn: str, worker_role: str, run_once: Callable[..., Worker], minilm: str
) -> None:
    conn.execute(
        "CREATE TABLE notes (id int PRIMARY KEY, owner text NOT NULL, body text, secret text)"
    )
    conn.execute("ALTER TABLE notes ENABLE ROW LEVEL SECURITY")
    conn.execute("CREATE POLICY own_notes ON notes USING (owner = current_user)")
    conn.execute(
        "INSERT INTO notes VALUES (1, 'alice', 'alice writes', 's1'), (2, 'bob', 'bob writes', 's2')"
    )
    conn.execute("SELECT embeddings.watch('notes', 'body', model => %s)", (minilm,))
    conn.execute("SELECT embeddings.grant_worker(%s)", (worker_role,))
    # Registered after the grant: watch() extends it.
    conn.execute("CREATE TABLE later (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO later VALUES (1, 'registered after the grant')")
    conn.execute("SELECT embeddings.watch('later', 'body', model => %s)", (minilm,))

    as_worker = make_conninfo(dsn, user=worker_role)
    run_once(database_url=as_worker)

    assert conn.execute("SELECT count(embedding) FROM notes").fetchone() == (2,)
    assert conn.execute("SELECT count(embedding) FROM later").fetchone() == (1,)
    assert messages(conn) == []
    with psycopg.connect(as_worker, autocommit=True) as worker_conn:
        # It may not touch the table itself: its functions (run as the owner) did.
        for statement in ("SELECT * FROM notes", "UPDATE notes SET embedding = NULL"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                worker_conn.execute(statement)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            worker_conn.execute("UPDATE notes SET body = 'x'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            worker_conn.execute("DELETE FROM notes")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            worker_conn.execute("SELECT * FROM pg_authid")


def test_the_worker_role_gets_no_privilege_on_user_tables(conn: Conn, worker_role: str) -> None:
    """It reads and writes them through the functions generated for each, which run as the
    table's owner (sql/32_access.sql): no SELECT, no UPDATE, no row-level security policy."""
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    conn.execute("ALTER TABLE notes ENABLE ROW LEVEL SECURITY")
    conn.execute("CREATE TABLE long_notes (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('notes', 'body')")
    conn.execute("SELECT embeddings.grant_worker(%s)", (worker_role,))
    conn.execute("SELECT embeddings.watch('long_notes', 'body', chunk_tokens => 50)")  # after
    # (The chunk table's own policy mirrors the table's row-level security for readers:
    # docs/security.md#search. None on the user's tables.)
    assert conn.execute(
        "SELECT count(*) FROM pg_policy WHERE polrelid IN ('notes'::regclass, 'long_notes'::regclass)"
    ).fetchone() == (0,)
    privileges = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND (has_table_privilege(%s, c.oid, 'SELECT, INSERT, UPDATE,"
        " DELETE') OR has_any_column_privilege(%s, c.oid, 'SELECT, INSERT, UPDATE'))",
        (worker_role, worker_role),
    ).fetchall()
    assert privileges == []
    functions = conn.execute(
        "SELECT count(*) FILTER (WHERE has_function_privilege(%s, p.oid, 'EXECUTE')), count(*)"
        " FROM pg_proc p WHERE p.proname ~ '^embeddings_[0-9]+_(load|store|blank|reusable|chunks)$'",
        (worker_role,),
    ).fetchone()
    # notes' load, store, blank; long_notes' load, reusable, chunks, and chunks in the shape a
    # worker of 0.2.0 calls during a rolling upgrade (which runs as the caller)
    assert functions == (7, 7)
