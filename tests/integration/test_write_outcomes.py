"""The write transaction decides rows' outcomes only once it has committed (issue 12, items 1-2).

A connection that dies at COMMIT, or a savepoint that rolls back after part of its work
succeeded, must leave every row either embedded or still queued: never acknowledged with no
vector, never cleared instead of embedded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from tests.support import stores
from tests.support.jobs import clear_queue, messages
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]


def kill_own_backend_at_commit_once(conn: Conn, table: str) -> None:
    """A deferred constraint trigger: the first worker transaction that writes an embedding
    into `table` terminates its own backend at COMMIT (the transaction rolls back, the client
    sees its connection die). A sequence, not a table, counts: nextval() survives rollbacks."""
    conn.execute("CREATE SEQUENCE commit_kills")
    conn.execute(
        """CREATE FUNCTION die_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF nextval('commit_kills') = 1 THEN
                PERFORM pg_terminate_backend(pg_backend_pid());
                PERFORM pg_sleep(5);  -- the termination interrupts this
            END IF;
            RETURN NULL;
        END $$"""
    )
    conn.execute(
        f"CREATE CONSTRAINT TRIGGER die_at_commit AFTER UPDATE ON {table}"
        " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW"
        " WHEN (NEW.embedding IS NOT NULL) EXECUTE FUNCTION die_at_commit()"
    )


def test_a_connection_lost_at_commit_leaves_no_row_without_its_vector(
    conn: Conn, run_once: Callable[..., Worker], minilm: str
) -> None:
    stores.watched_table(
        conn, minilm, "SELECT g, 'document number ' || g FROM generate_series(1, 6) g"
    )
    kill_own_backend_at_commit_once(conn, "docs")

    run_once()

    assert conn.execute("SELECT is_called FROM commit_kills").fetchone() == (True,)  # it died
    assert conn.execute("SELECT count(*) FROM docs WHERE embedding IS NULL").fetchone() == (0,)
    assert messages(conn) == []
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)


def test_a_failed_clear_does_not_clear_the_fresh_vectors_of_its_batch(
    conn: Conn, run_once: Callable[..., Worker], minilm: str
) -> None:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text, embedding halfvec(384))")
    # Row 3 is blank and still holds an old vector: the worker must clear it, which the table
    # refuses. Rows 1 and 2 must get their vectors all the same.
    conn.execute(
        "INSERT INTO docs VALUES (1, 'first text', NULL), (2, 'second text', NULL),"
        " (3, '   ', array_fill(0.1, ARRAY[384])::halfvec)"
    )
    conn.execute(
        """CREATE FUNCTION refuse_clearing_3() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'row 3 keeps its vector';
        END $$"""
    )
    conn.execute(
        "CREATE TRIGGER refuse_clearing_3 BEFORE UPDATE ON docs FOR EACH ROW"
        " WHEN (NEW.id = 3 AND NEW.embedding IS NULL) EXECUTE FUNCTION refuse_clearing_3()"
    )
    conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s, clear_on_update => false)", (minilm,)
    )
    row = conn.execute("SELECT id FROM embeddings.targets").fetchone()
    assert row is not None
    clear_queue(conn)
    conn.execute("SELECT embeddings_internal.enqueue_keys(%s, ARRAY[1, 2, 3]::bigint[])", (row[0],))

    run_once()

    assert conn.execute("SELECT id FROM docs WHERE embedding IS NULL").fetchall() == []
    failures = conn.execute("SELECT row_key, last_error FROM embeddings.failures").fetchall()
    assert [key for key, _ in failures] == [3]
    assert "row 3 keeps its vector" in failures[0][1]
    assert messages(conn) == []
