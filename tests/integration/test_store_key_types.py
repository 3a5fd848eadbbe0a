"""A side table's or chunk table's key columns follow the type of the watched table's key
(issue 36 §6), as a plain target's generated functions do: `ALTER TABLE ... ALTER COLUMN id TYPE
bigint` widens the store's key column too, in the same transaction, so a row keyed past 2^31 is
embedded instead of dead-lettered with "integer out of range". A change the store cannot follow
(no cast from the old type) is the target's problem, shown by status, its jobs deferred."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from tests.support import stores
from tests.support.fetch import fetch_row, fetch_value
from tests.support.jobs import JOBS
from worker import exits
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]

STORE_KINDS = ("side", "chunks")
BIG = 3_000_000_000  # past 2^31
LONG_KEY = "a key far longer than ten characters"


def store_table(conn: Conn) -> str:
    return str(
        fetch_value(conn, "SELECT coalesce(side_table, chunk_table)::text FROM embeddings.targets")
    )


def key_type(conn: Conn, table: str) -> str:
    return str(
        fetch_value(
            conn,
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attname = 'id'",
            (table,),
        )
    )


def failures(conn: Conn) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT row_key, last_error FROM embeddings.failures").fetchall()


def problem(conn: Conn) -> tuple[Any, Any]:
    row = fetch_row(
        conn, "SELECT t.problem, s.problem FROM embeddings.targets t, embeddings.status s"
    )
    return row[0], row[1]


def assert_served(conn: Conn) -> None:
    """Nothing failed, and neither the target nor its status has a problem."""
    assert failures(conn) == []
    assert problem(conn) == (None, None)


@dataclass(frozen=True)
class Widening:
    before: str  # the table's key type
    first: Any  # the key of the row embedded before the change
    after: str
    shown: str  # the store's key type after it (format_type)
    new: Any  # a key only the wider type holds


WIDENINGS = {
    "integer to bigint": Widening("integer", 1, "bigint", "bigint", BIG),
    "varchar(10) to varchar(100)": Widening(
        "varchar(10)", "short", "varchar(100)", "character varying(100)", LONG_KEY
    ),
}


@pytest.mark.parametrize("store", STORE_KINDS)
@pytest.mark.parametrize("widening", list(WIDENINGS))
def test_a_widened_key_is_followed_by_the_store(
    conn: Conn, minilm: str, run_once: Callable[..., Worker], store: str, widening: str
) -> None:
    w = WIDENINGS[widening]
    conn.execute(f"CREATE TABLE docs (id {w.before} PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs VALUES (%s, 'first text')", (w.first,))
    stores.watch(conn, store, minilm)
    run_once()
    conn.execute(f"ALTER TABLE docs ALTER COLUMN id TYPE {w.after}")
    assert key_type(conn, store_table(conn)) == w.shown
    conn.execute("INSERT INTO docs VALUES (%s, 'a row only the wider key holds')", (w.new,))
    conn.execute("UPDATE docs SET body = 'first text, edited' WHERE id = %s", (w.first,))
    run_once()
    assert_served(conn)
    assert stores.embedded(conn, store) == {w.first: True, w.new: True}


@pytest.mark.parametrize("store", STORE_KINDS)
def test_a_key_change_the_store_cannot_follow_is_a_problem_and_defers(
    conn: Conn, minilm: str, run_once: Callable[..., Worker], store: str
) -> None:
    conn.execute("CREATE TABLE docs (id integer PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs VALUES (1, 'first text'), (2, 'second text')")
    stores.watch(conn, store, minilm)
    run_once()
    conn.execute("UPDATE docs SET body = 'first text, edited' WHERE id = 1")  # a job waiting
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    # No cast from integer to uuid: the store's keys cannot be converted as the table's were.
    conn.execute("ALTER TABLE docs ALTER COLUMN id TYPE uuid USING md5(id::text)::uuid")
    table = store_table(conn)
    assert key_type(conn, table) == "integer"
    registered, shown = problem(conn)
    assert registered is not None and table in registered and "uuid" in registered
    assert shown == registered
    assert any("no longer embedded" in n for n in notices)
    # The application's writes still work; the worker defers the target's job, spends nothing.
    conn.execute("INSERT INTO docs VALUES (gen_random_uuid(), 'written after the change')")
    run_once(expect=exits.UNSERVED)  # the target's problem leaves its jobs
    assert failures(conn) == []
    left = conn.execute(f"SELECT count(*) FROM {JOBS}").fetchone()
    assert left is not None and left[0] >= 1

    # The operator converts the store's keys as the table's were: the problem goes, every row
    # is queued again and embedded.
    conn.execute(f"ALTER TABLE {table} ALTER COLUMN id TYPE uuid USING md5(id::text)::uuid")
    assert problem(conn)[0] is None
    run_once()
    assert_served(conn)
    assert all(stores.embedded(conn, store).values())
