"""Two-phase commit (XA/JTA): an application that prepares its transaction can write watched
tables whatever the workers do (idle, busy, gone), and what it prepared is embedded once it
commits, and never when it rolls back.

Postgres refuses PREPARE TRANSACTION for a transaction that executed LISTEN, UNLISTEN or
NOTIFY: nothing of ours may send one, or write state shared with other sessions, in the
application's transaction.
"""

from __future__ import annotations

import contextlib
import functools
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from tests.integration.conftest import Running
from tests.integration.test_supabase import GUIDE_SETUP
from tests.support.fetch import fetch_value
from tests.support.jobs import JOBS
from tests.support.process import wait_for

Conn = psycopg.Connection[Any]

DEADLINE = 30  # seconds for a committed row to be embedded by a running worker
NO_TIMED_WAKE = 60  # the workers' poll: no timed wake-up in time to matter


@pytest.fixture
def prepared(dsn: str, conn: Conn) -> Iterator[Callable[..., str]]:
    """Runs statements in a transaction of a connection of its own and prepares it; returns the
    global transaction id. Whatever a test leaves prepared is rolled back at its end (a
    prepared transaction would keep the database from being dropped)."""
    row = conn.execute("SHOW max_prepared_transactions").fetchone()
    if row is None or int(row[0]) == 0:
        pytest.skip("the server allows no prepared transactions (max_prepared_transactions = 0)")
    gids: list[str] = []

    def prepare(*statements: str) -> str:
        gid = f"xa-{uuid.uuid4().hex[:12]}"
        with psycopg.connect(dsn, autocommit=True) as app:
            app.execute("BEGIN")
            for statement in statements:
                app.execute(statement)
            app.execute(f"PREPARE TRANSACTION '{gid}'")
        gids.append(gid)
        return gid

    yield prepare
    for gid in gids:
        left = conn.execute("SELECT 1 FROM pg_prepared_xacts WHERE gid = %s", (gid,)).fetchone()
        if left:
            conn.execute(f"ROLLBACK PREPARED '{gid}'")


@pytest.fixture
def docs(conn: Conn, minilm: str) -> None:
    """A table watched by column and one watched by a content function (its triggers send
    through another path), with a counter of the vectors written into each row."""
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (minilm,))
    conn.execute("CREATE TABLE notes (id bigint PRIMARY KEY, title text, body text)")
    conn.execute(
        "CREATE FUNCTION note_text(n notes) RETURNS text LANGUAGE sql STABLE"
        " RETURN n.title || ': ' || n.body"
    )
    conn.execute("SELECT embeddings.watch('notes', 'note_text', model => %s)", (minilm,))
    conn.execute("CREATE TABLE vector_writes (tab text, id bigint)")
    conn.execute(
        """CREATE FUNCTION count_vector_write() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN INSERT INTO vector_writes VALUES (TG_TABLE_NAME, NEW.id); RETURN NULL; END $$"""
    )
    for table in ("docs", "notes"):
        conn.execute(
            f"CREATE TRIGGER count_vector_write AFTER UPDATE OF embedding ON {table}"
            " FOR EACH ROW WHEN (NEW.embedding IS NOT NULL) EXECUTE FUNCTION count_vector_write()"
        )


def embedded(conn: Conn, table: str, key: int) -> bool:
    row = conn.execute(
        f"SELECT embedding IS NOT NULL FROM {table} WHERE id = %s", (key,)
    ).fetchone()
    return row == (True,)


def vector_writes(conn: Conn, table: str, key: int) -> int:
    return int(
        fetch_value(
            conn, "SELECT count(*) FROM vector_writes WHERE tab = %s AND id = %s", (table, key)
        )
    )


def queued_jobs(conn: Conn) -> int:
    return int(fetch_value(conn, f"SELECT count(*) FROM {JOBS}"))


def commit_prepared(conn: Conn, gid: str) -> None:
    conn.execute(f"COMMIT PREPARED '{gid}'")


def write_and_commit_prepared(
    conn: Conn, prepared: Callable[..., str], key: int, *, update: bool = False
) -> None:
    """One INSERT (or UPDATE) into each watched table, prepared, committed, then embedded."""
    if update:
        statements = (
            f"UPDATE docs SET body = 'changed in a prepared transaction {key}' WHERE id = {key}",
            f"UPDATE notes SET body = 'changed in a prepared transaction {key}' WHERE id = {key}",
        )
    else:
        statements = (
            f"INSERT INTO docs VALUES ({key}, 'written in a prepared transaction {key}')",
            f"INSERT INTO notes VALUES ({key}, 'note {key}', 'written in a prepared transaction')",
        )
    before = {t: vector_writes(conn, t, key) for t in ("docs", "notes")}
    gid = prepared(*statements)
    commit_prepared(conn, gid)
    wait_for(
        lambda: all(vector_writes(conn, t, key) > before[t] for t in before),
        timeout=DEADLINE,
        what=f"row {key} of docs and notes to be embedded after COMMIT PREPARED",
    )


def test_prepared_writes_with_a_worker_idle_and_busy_are_embedded_after_commit(
    conn: Conn, docs: None, prepared: Callable[..., str], running: Callable[..., Running]
) -> None:
    running(poll_seconds=NO_TIMED_WAKE)
    # Idle between rounds: each row is embedded before the next transaction begins.
    for key in range(1, 6):
        write_and_commit_prepared(conn, prepared, key)
    for key in range(1, 4):
        write_and_commit_prepared(conn, prepared, key, update=True)
    # Busy: a backlog in flight while the application prepares.
    conn.execute(
        "INSERT INTO docs SELECT g, 'backlog document ' || g FROM generate_series(100, 399) g"
    )
    gids = [
        prepared(f"INSERT INTO docs VALUES ({key}, 'prepared while the worker is busy {key}')")
        for key in range(10, 15)
    ]
    for gid in gids:
        commit_prepared(conn, gid)
    wait_for(
        lambda: all(embedded(conn, "docs", key) for key in range(10, 15)),
        timeout=DEADLINE * 4,
        what="the rows prepared during the backlog to be embedded",
    )


def test_prepared_writes_after_a_worker_exited(
    conn: Conn, docs: None, prepared: Callable[..., str], running: Callable[..., Running]
) -> None:
    """A worker that went away (after idling) leaves nothing behind that writers look at; the
    next worker embeds what was committed meanwhile."""
    first = running(poll_seconds=NO_TIMED_WAKE)
    conn.execute("INSERT INTO docs VALUES (1, 'committed the ordinary way')")
    wait_for(lambda: embedded(conn, "docs", 1), timeout=DEADLINE, what="row 1 to be embedded")
    first.stop()
    gid = prepared("INSERT INTO docs VALUES (2, 'written while no worker runs')")
    commit_prepared(conn, gid)
    assert queued_jobs(conn) == 1
    running(poll_seconds=NO_TIMED_WAKE)
    wait_for(lambda: embedded(conn, "docs", 2), timeout=DEADLINE, what="row 2 to be embedded")


def test_rolled_back_prepared_writes_queue_and_embed_nothing(
    conn: Conn, docs: None, prepared: Callable[..., str], running: Callable[..., Running]
) -> None:
    conn.execute("INSERT INTO docs VALUES (1, 'committed the ordinary way')")
    running(poll_seconds=NO_TIMED_WAKE)
    wait_for(lambda: embedded(conn, "docs", 1), timeout=DEADLINE, what="row 1 to be embedded")
    gid = prepared(
        "INSERT INTO docs VALUES (2, 'prepared, then rolled back')",
        "UPDATE docs SET body = 'an update rolled back' WHERE id = 1",
        "INSERT INTO notes VALUES (2, 'note', 'prepared, then rolled back')",
    )
    conn.execute(f"ROLLBACK PREPARED '{gid}'")
    assert queued_jobs(conn) == 0
    # A row committed after the rollback is embedded: the worker has looked since.
    conn.execute("INSERT INTO docs VALUES (3, 'committed after the rollback')")
    wait_for(lambda: embedded(conn, "docs", 3), timeout=DEADLINE, what="row 3 to be embedded")
    assert queued_jobs(conn) == 0
    assert vector_writes(conn, "docs", 1) == 1  # not embedded again
    assert conn.execute("SELECT count(*) FROM docs WHERE id = 2").fetchone() == (0,)
    assert conn.execute("SELECT body FROM docs WHERE id = 1").fetchone() == (
        "committed the ordinary way",
    )


def guide_row_embedded(conn: Conn, title: str) -> bool:
    row = conn.execute(
        "SELECT embedding IS NOT NULL FROM documents WHERE title = %s", (title,)
    ).fetchone()
    return row == (True,)


def test_supabase_guide_jobs_sent_in_a_prepared_transaction(
    conn: Conn, prepared: Callable[..., str], running: Callable[..., Running], minilm: str
) -> None:
    """The guide's triggers call pgmq.send in the application's transaction."""
    conn.execute(GUIDE_SETUP)
    conn.execute(
        "SELECT embeddings.watch('documents', 'embedding_input', model => %s, triggers => false)",
        (minilm,),
    )
    running(poll_seconds=NO_TIMED_WAKE)
    for i in range(3):
        gid = prepared(
            f"INSERT INTO documents (title, content) VALUES ('guide {i}', 'sent by pgmq.send')"
        )
        commit_prepared(conn, gid)
        title = f"guide {i}"
        wait_for(
            functools.partial(guide_row_embedded, conn, title),
            timeout=DEADLINE,
            what=f"{title} to be embedded",
        )
    gid = prepared("INSERT INTO documents (title, content) VALUES ('rolled back', 'never sent')")
    conn.execute(f"ROLLBACK PREPARED '{gid}'")
    assert queued_jobs(conn) == 0


def test_schema_changes_of_a_watched_table_in_a_prepared_transaction(
    conn: Conn, docs: None, prepared: Callable[..., str], running: Callable[..., Running]
) -> None:
    """DDL on a watched table runs our event triggers in the application's transaction."""
    running(poll_seconds=NO_TIMED_WAKE)
    gid = prepared(
        "ALTER TABLE docs ADD COLUMN extra integer",
        "ALTER TABLE docs RENAME COLUMN body TO content",
        "INSERT INTO docs (id, content) VALUES (1, 'after the schema change')",
    )
    commit_prepared(conn, gid)
    wait_for(lambda: embedded(conn, "docs", 1), timeout=DEADLINE, what="row 1 to be embedded")


def test_a_login_without_grants_cannot_make_prepared_writes_fail(
    conn: Conn, dsn: str, docs: None, prepared: Callable[..., str]
) -> None:
    """No mark, flag or registration of ours that a writer's transaction consults can be set
    by a login without grants: there is none."""
    conn.execute("CREATE ROLE stranger LOGIN")
    try:
        with psycopg.connect(dsn, user="stranger", autocommit=True) as stranger:
            # What registered an idle worker before 0.2.0 (every writer then sent a NOTIFY).
            with contextlib.suppress(
                psycopg.errors.UndefinedFunction, psycopg.errors.InsufficientPrivilege
            ):
                stranger.execute("SELECT embeddings.worker_idle('embedding_jobs')")
            stranger.execute("LISTEN embeddings_jobs")
            gid = prepared("INSERT INTO docs VALUES (1, 'prepared while a stranger listens')")
            commit_prepared(conn, gid)
            assert queued_jobs(conn) == 1
        # Nothing of our schema that a login without grants may write.
        writable = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'embeddings' AND c.relkind IN ('r', 'p', 'v')"
            " AND has_table_privilege('stranger', c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')"
        ).fetchall()
        assert writable == []
    finally:
        conn.execute("DROP OWNED BY stranger")
        conn.execute("DROP ROLE stranger")


def test_registering_a_model_in_a_prepared_transaction(
    conn: Conn, prepared: Callable[..., str]
) -> None:
    """register_model() sent a NOTIFY that nothing listened to (workers re-read the registry
    with the targets): a deployment that provisions models and tables in one prepared
    transaction could not prepare it."""
    gid = prepared(
        "SELECT embeddings.register_model('te3-small', 1536, 'openai',"
        " 'https://api.openai.com/v1', 'text-embedding-3-small')",
        "SELECT embeddings.register_model('te3-small', 1536, 'openai',"
        " 'https://api.openai.com/v1', 'text-embedding-3-small', timeout_seconds => 10)",
    )
    commit_prepared(conn, gid)
    row = conn.execute(
        "SELECT dimensions, timeout_seconds FROM embeddings.models WHERE name = 'te3-small'"
    ).fetchone()
    assert row == (1536, 10)
