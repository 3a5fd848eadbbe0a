"""A key column retyped while jobs of its rows are queued (QA 5a, finding 2): the queued keys of
the old type no longer name a row; they are acknowledged, not dead-lettered, and the rows are
queued again under their new keys, so every row gets its vector. A key sent by hand that is not
of the key's type still dead-letters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.integration.conftest import TINY_DIMS
from tests.support.jobs import dead_letters, messages
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]


def failures(conn: Conn) -> list[str]:
    return [e for (e,) in conn.execute("SELECT last_error FROM embeddings.failures").fetchall()]


@pytest.fixture
def retyped(conn: Conn, tiny_models: tuple[str, str], run_once: Callable[..., Worker]) -> None:
    """`docs` keyed by a numeric with fractions, embedded, its content updated (20 keys queued,
    the worker not running), then its key retyped to int."""
    conn.execute(
        f"CREATE TABLE docs (n numeric PRIMARY KEY, body text, embedding halfvec({TINY_DIMS}))"
    )
    conn.execute(
        "INSERT INTO docs (n, body) SELECT i + 0.4762, 'first content ' || i"
        " FROM generate_series(1, 20) i"
    )
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (tiny_models[0],))
    run_once()
    conn.execute("UPDATE docs SET body = 'int-key content ' || n")
    assert len(messages(conn)) > 0
    conn.execute("ALTER TABLE docs ALTER COLUMN n TYPE int USING round(n)::int")


@pytest.mark.usefixtures("retyped")
def test_rows_whose_jobs_were_queued_before_a_key_retype_get_their_vectors(
    conn: Conn, run_once: Callable[..., Worker]
) -> None:
    run_once()
    assert failures(conn) == []
    assert conn.execute(
        "SELECT count(*) FROM docs WHERE embedding IS NULL OR body NOT LIKE 'int-key%'"
    ).fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM docs").fetchone() == (20,)
    assert messages(conn) == []


@pytest.mark.usefixtures("retyped")
def test_a_key_sent_by_hand_after_a_retype_that_is_not_of_its_type_still_dead_letters(
    conn: Conn, run_once: Callable[..., Worker]
) -> None:
    run_once()
    conn.execute(
        "SELECT pgmq.send('embedding_jobs', jsonb_build_object('target', id, 'keys',"
        " jsonb_build_array(0.5))) FROM embeddings.targets"
    )
    run_once(max_attempts=1)
    [error] = failures(conn)
    assert "invalid row key" in error


def test_sweep_does_not_call_rows_that_exist_deleted(
    conn: Conn, tiny_models: tuple[str, str], run_once: Callable[..., Worker]
) -> None:
    """A dead letter whose key names no row now, after a retype, though its row is there."""
    conn.execute(
        f"CREATE TABLE docs (n numeric PRIMARY KEY, body text, embedding halfvec({TINY_DIMS}))"
    )
    conn.execute("INSERT INTO docs VALUES (1.4, 'one')")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (tiny_models[0],))
    run_once()
    dead_letters(conn, [1.4])
    conn.execute("ALTER TABLE docs ALTER COLUMN n TYPE int USING round(n)::int")
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    conn.execute("SELECT embeddings.sweep()")
    [said] = [n for n in notices if "resolved" in n]
    assert "deleted rows" not in said and "names no row" in said
