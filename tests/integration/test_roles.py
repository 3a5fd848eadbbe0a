"""The worker as a least-privilege role, on tables with row-level security."""

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
        # It may update the embedding column and nothing else.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            worker_conn.execute("UPDATE notes SET body = 'x'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            worker_conn.execute("DELETE FROM notes")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            worker_conn.execute("SELECT * FROM pg_authid")


def test_unwatch_and_uninstall_remove_the_worker_policies(conn: Conn, worker_role: str) -> None:
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    conn.execute("ALTER TABLE notes ENABLE ROW LEVEL SECURITY")
    conn.execute("SELECT embeddings.watch('notes', 'body')")
    conn.execute("SELECT embeddings.grant_worker(%s)", (worker_role,))
    policies = "SELECT count(*) FROM pg_policy WHERE polrelid = 'notes'::regclass"
    assert conn.execute(policies).fetchone() == (2,)  # SELECT and UPDATE
    conn.execute("SELECT embeddings.unwatch('notes')")
    assert conn.execute(policies).fetchone() == (0,)


def test_the_worker_policy_lets_it_read_and_update_but_not_insert(
    conn: Conn, dsn: str, worker_role: str
) -> None:
    """A worker role that also writes as an application (INSERT granted) gains nothing from
    the worker policy: the table's own policies still decide what it may insert or delete."""
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, owner text NOT NULL, body text)")
    conn.execute("ALTER TABLE notes ENABLE ROW LEVEL SECURITY")
    conn.execute("CREATE POLICY own_notes ON notes USING (owner = current_user)")
    conn.execute("INSERT INTO notes VALUES (1, 'alice', 'alice writes')")
    conn.execute("SELECT embeddings.watch('notes', 'body')")
    conn.execute("SELECT embeddings.grant_worker(%s)", (worker_role,))
    conn.execute(f"GRANT INSERT, DELETE ON notes TO {worker_role}")
    commands = conn.execute(
        "SELECT string_agg(polcmd::text, '' ORDER BY polcmd) FROM pg_policy"
        " WHERE polrelid = 'notes'::regclass AND polname ~ '^embeddings_worker_'"
    ).fetchone()
    assert commands == ("rw",)  # SELECT and UPDATE, not ALL

    with psycopg.connect(make_conninfo(dsn, user=worker_role), autocommit=True) as worker_conn:
        assert worker_conn.execute("SELECT count(*) FROM notes").fetchone() == (1,)
        worker_conn.execute("UPDATE notes SET embedding = NULL WHERE id = 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            worker_conn.execute("INSERT INTO notes VALUES (2, 'bob', 'forged')")
        assert worker_conn.execute("DELETE FROM notes").rowcount == 0
