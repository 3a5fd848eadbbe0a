"""Statement-level triggers: exactly which statements enqueue what."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.support import stores
from tests.support.jobs import (
    clear_queue,
    keys_read_by_the_database,
    messages,
    move_inbox,
    queued_keys,
)
from worker.pipeline.messages import message_keys

Conn = psycopg.Connection[Any]
VEC = "array_fill(0.1, ARRAY[384])::halfvec"


def watch_embedded(conn: Conn, content: str) -> int:
    """Watches table docs with `content` (a column or a content function), gives every row a
    vector (as the worker would have), and empties the queue; returns the target id."""
    row = conn.execute("SELECT embeddings.watch('docs', %s)", (content,)).fetchone()
    assert row is not None
    conn.execute(f"UPDATE docs SET embedding = {VEC}")
    clear_queue(conn)
    return int(row[0])


@pytest.fixture
def docs(conn: Conn) -> Iterator[int]:
    """A watched table with rows 1..3, each already embedded, and an empty queue."""
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, title text, body text)")
    conn.execute("INSERT INTO docs VALUES (1, 't1', 'one'), (2, 't2', 'two'), (3, 't3', 'three')")
    yield watch_embedded(conn, "body")


def embedded(conn: Conn) -> dict[int, bool]:
    return dict(conn.execute("SELECT id, embedding IS NOT NULL FROM docs ORDER BY id").fetchall())


def test_insert_enqueues_rows_with_content(conn: Conn, docs: int) -> None:
    conn.execute("INSERT INTO docs (id, body) VALUES (10, 'ten')")
    conn.execute(
        "INSERT INTO docs (id, body) VALUES (11, 'eleven'), (12, ''), (13, NULL), (14, 'x')"
    )
    # One message per statement, its integer key column as array text (sql/20_queue.sql).
    assert messages(conn) == [
        {"target": docs, "columns": ["{10}"]},
        {"target": docs, "columns": ["{11,14}"]},
    ]


def test_a_bulk_insert_is_one_inbox_row_moved_as_up_to_128_keys_per_message(
    conn: Conn, docs: int
) -> None:
    conn.execute(
        "INSERT INTO docs (id, body) SELECT g, 'row ' || g FROM generate_series(100, 399) g"
    )
    assert [len(message_keys(m)) for m in messages(conn)] == [300]  # the inbox row
    assert move_inbox(conn) == 3
    sizes = [len(message_keys(m)) for m in messages(conn)]
    assert sizes == [128, 128, 44]
    assert sorted(queued_keys(conn, docs)) == list(range(100, 400))


def test_keys_of_a_variable_width_type_are_sliced_into_messages_in_order(conn: Conn) -> None:
    # Text keys go as a JSON array, sliced into messages when moved (22_inbox.sql).
    conn.execute("CREATE TABLE notes (slug text PRIMARY KEY, body text)")
    row = conn.execute("SELECT embeddings.watch('notes', 'body')").fetchone()
    assert row is not None
    clear_queue(conn)
    conn.execute("INSERT INTO notes SELECT 'n,\"' || g, 'row ' || g FROM generate_series(1, 300) g")
    inserted = [r[0] for r in conn.execute("SELECT slug FROM notes").fetchall()]
    assert all(isinstance(m["columns"][0], list) for m in messages(conn))  # the inbox row
    assert queued_keys(conn, row[0]) == inserted
    move_inbox(conn)
    assert [len(message_keys(m)) for m in messages(conn)] == [128, 128, 44]
    assert sorted(queued_keys(conn, row[0])) == sorted(inserted)
    assert keys_read_by_the_database(conn) == inserted


def test_a_content_function_targets_bulk_insert_is_sliced_in_order(conn: Conn) -> None:
    conn.execute("CREATE TABLE notes (id bigint PRIMARY KEY, title text, body text)")
    conn.execute(
        "CREATE FUNCTION note_text(n notes) RETURNS text LANGUAGE sql IMMUTABLE"
        " AS $$ SELECT n.title || ': ' || n.body $$"
    )
    row = conn.execute("SELECT embeddings.watch('notes', 'note_text')").fetchone()
    assert row is not None
    clear_queue(conn)
    conn.execute("INSERT INTO notes SELECT g, 't', 'b' FROM generate_series(1, 300) g")
    # Through the inbox, as a content column's: one row for the statement, moved as messages.
    assert [len(message_keys(m)) for m in messages(conn)] == [300]
    move_inbox(conn)
    assert [len(message_keys(m)) for m in messages(conn)] == [128, 128, 44]
    assert queued_keys(conn, row[0]) == list(range(1, 301))


def test_rows_inserted_with_an_embedding_are_trusted(conn: Conn, docs: int) -> None:
    conn.execute(f"INSERT INTO docs (id, body, embedding) VALUES (20, 'restored', {VEC})")
    assert messages(conn) == []


def test_update_of_content_enqueues_and_clears_the_stale_embedding(conn: Conn, docs: int) -> None:
    conn.execute("UPDATE docs SET body = 'changed' WHERE id IN (1, 2)")
    assert queued_keys(conn, docs) == [1, 2]
    assert embedded(conn) == {1: False, 2: False, 3: True}


def test_updates_that_do_not_change_content_enqueue_nothing(conn: Conn, docs: int) -> None:
    conn.execute("UPDATE docs SET title = 'other'")
    conn.execute("UPDATE docs SET body = body")
    conn.execute("UPDATE docs SET body = 'one' WHERE id = 1")
    assert messages(conn) == []
    assert embedded(conn) == {1: True, 2: True, 3: True}


def test_update_to_blank_content_clears_without_a_job(conn: Conn, docs: int) -> None:
    conn.execute("UPDATE docs SET body = NULL WHERE id = 1")
    conn.execute("UPDATE docs SET body = '' WHERE id = 2")
    assert messages(conn) == []
    assert embedded(conn) == {1: False, 2: False, 3: True}


def test_keep_mode_keeps_the_old_embedding_until_the_new_one_lands(conn: Conn, docs: int) -> None:
    conn.execute("SELECT embeddings.watch('docs', 'body', clear_on_update => false)")
    conn.execute("UPDATE docs SET body = 'changed' WHERE id = 1")
    conn.execute("UPDATE docs SET body = NULL WHERE id = 2")  # the worker clears it
    assert queued_keys(conn, docs) == [1, 2]
    assert embedded(conn) == {1: True, 2: True, 3: True}


def test_delete_and_truncate_enqueue_nothing(conn: Conn, docs: int) -> None:
    conn.execute("DELETE FROM docs WHERE id = 1")
    conn.execute("TRUNCATE docs")
    assert messages(conn) == []


def test_upsert_enqueues_inserted_and_changed_rows(conn: Conn, docs: int) -> None:
    conn.execute(
        "INSERT INTO docs (id, body) VALUES (1, 'one'), (2, 'new two'), (30, 'thirty')"
        " ON CONFLICT (id) DO UPDATE SET body = excluded.body"
    )
    assert sorted(queued_keys(conn, docs)) == [2, 30]


def test_a_changed_primary_key_counts_as_changed(conn: Conn, docs: int) -> None:
    conn.execute("UPDATE docs SET id = 40 WHERE id = 3")
    assert queued_keys(conn, docs) == [40]


def test_a_key_shift_queues_every_row_whose_embedding_was_cleared(conn: Conn) -> None:
    # One UPDATE moves keys and content together: each key ends up with the content its
    # neighbour had, so per key only the new last key looks changed, while per physical row
    # every content changed and the clear trigger cleared every embedding. Each cleared row
    # needs its job, or it stays without a vector for good (issue 25 §1).
    conn.execute("CREATE TABLE docs (pos int PRIMARY KEY, body text)")
    # Stored last key first, so that the UPDATE (in physical order) never meets a duplicate.
    conn.execute("INSERT INTO docs SELECT g, 'text of ' || g FROM generate_series(5, 1, -1) g")
    target = watch_embedded(conn, "body")

    conn.execute("UPDATE docs SET pos = pos + 1, body = 'text of ' || (pos + 1)")

    cleared = [r[0] for r in conn.execute("SELECT pos FROM docs WHERE embedding IS NULL")]
    assert sorted(cleared) == [2, 3, 4, 5, 6]
    assert sorted(queued_keys(conn, target)) == [2, 3, 4, 5, 6]


def test_a_key_shift_without_clearing_queues_every_key_given_another_rows_vector(
    conn: Conn,
) -> None:
    """With clear_on_update => false nothing is cleared: each moved row carries its vector to
    its new key, where the content (per key) is what it was. The vector is another row's: each
    such key needs its job too (found by the stateful test, issue 25 §1)."""
    conn.execute("CREATE TABLE docs (pos int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs SELECT g, 'text of ' || g FROM generate_series(5, 1, -1) g")
    target = stores.watch_with(conn, "docs", "body", clear_on_update=False)
    conn.execute("UPDATE docs SET embedding = array_fill(pos / 10.0, ARRAY[384])::halfvec")
    clear_queue(conn)

    conn.execute("UPDATE docs SET pos = pos + 1, body = 'text of ' || (pos + 1)")

    assert sorted(queued_keys(conn, target)) == [2, 3, 4, 5, 6]
    clear_queue(conn)
    conn.execute(f"UPDATE docs SET embedding = {VEC} WHERE pos = 2")  # as the worker writes
    assert queued_keys(conn, target) == []


def test_a_key_shift_of_a_content_function_target_queues_every_cleared_row(conn: Conn) -> None:
    conn.execute("CREATE TABLE docs (pos int, part int, body text, PRIMARY KEY (pos, part))")
    conn.execute(
        "CREATE FUNCTION doc_text(d docs) RETURNS text LANGUAGE sql STABLE AS $$ SELECT d.body $$"
    )
    conn.execute("INSERT INTO docs SELECT g, 0, 'text of ' || g FROM generate_series(5, 1, -1) g")
    target = watch_embedded(conn, "doc_text")

    conn.execute("UPDATE docs SET pos = pos + 1, body = 'text of ' || (pos + 1)")

    assert conn.execute("SELECT count(*) FROM docs WHERE embedding IS NULL").fetchone() == (5,)
    assert sorted(k[0] for k in queued_keys(conn, target)) == [2, 3, 4, 5, 6]


def test_clearing_an_embedding_by_hand_queues_the_row(conn: Conn, docs: int) -> None:
    # A key that lost its vector in a statement gets a job (the sweep would find it anyway).
    conn.execute("UPDATE docs SET embedding = NULL WHERE id = 2")
    conn.execute("UPDATE docs SET body = '', embedding = NULL WHERE id = 3")  # blank: nothing
    assert queued_keys(conn, docs) == [2]


def test_content_function_changes_are_compared_through_the_function(conn: Conn) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, title text, body text, views int)")
    conn.execute(
        "CREATE FUNCTION doc_input(d docs) RETURNS text LANGUAGE sql IMMUTABLE"
        " AS $$ SELECT d.title || ': ' || d.body $$"
    )
    conn.execute("INSERT INTO docs VALUES (1, 'a', 'b', 0), (2, 'c', 'd', 0)")
    target = watch_embedded(conn, "doc_input")

    conn.execute("UPDATE docs SET views = views + 1")  # not part of the content
    assert messages(conn) == []
    conn.execute("UPDATE docs SET title = 'new' WHERE id = 2")
    assert queued_keys(conn, target) == [2]
    assert embedded(conn) == {1: True, 2: False}


def test_an_update_evaluates_a_content_function_once_per_old_and_new_row(conn: Conn) -> None:
    """The statement trigger compares each row's old and new content: one call of the content
    function each (through the owner-run wrapper, a costly call), not one per mention in its
    query (three per row with clear_on_update before). The clear trigger, a row trigger of its
    own, compares them too: two more."""
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute(
        "CREATE FUNCTION counted(d docs) RETURNS text LANGUAGE plpgsql STABLE AS $$ BEGIN"
        " RAISE NOTICE 'content of %', d.id; RETURN d.body; END $$"
    )
    conn.execute("INSERT INTO docs SELECT i, 'text ' || i FROM generate_series(1, 10) i")
    target = watch_embedded(conn, "counted")
    calls: list[str] = []
    conn.add_notice_handler(lambda notice: calls.append(notice.message_primary or ""))

    conn.execute("UPDATE docs SET body = body || ' edited'")

    assert sorted(queued_keys(conn, target)) == list(range(1, 11))
    assert len([c for c in calls if c.startswith("content of")]) == 4 * 10


def test_a_raising_content_function_never_breaks_the_write(conn: Conn) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute(
        "CREATE FUNCTION picky(d docs) RETURNS text LANGUAGE plpgsql STABLE AS $$ BEGIN"
        " IF d.body = 'poison' THEN RAISE EXCEPTION 'cannot read %', d.id; END IF;"
        " RETURN d.body; END $$"
    )
    target = conn.execute("SELECT embeddings.watch('docs', 'picky')").fetchone()
    assert target is not None
    conn.execute("INSERT INTO docs VALUES (1, 'fine'), (2, 'poison')")
    # Enqueued unfiltered: the worker meets the error and dead-letters row 2 with it.
    assert sorted(queued_keys(conn, target[0])) == [1, 2]


def test_writers_need_no_rights_on_the_queue(conn: Conn, docs: int) -> None:
    conn.execute("CREATE ROLE app_writer")
    conn.execute("GRANT INSERT, UPDATE, SELECT ON docs TO app_writer")
    conn.execute("SET ROLE app_writer")
    try:
        conn.execute("INSERT INTO docs (id, body) VALUES (50, 'from the app')")
        conn.execute("UPDATE docs SET body = 'changed by the app' WHERE id = 1")
    finally:
        conn.execute("RESET ROLE")
    assert queued_keys(conn, docs) == [50, 1]
