"""All the ways rows arrive (issue 13 §6): exactly what each statement queues, and what ends
in the table once the worker ran."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.support.jobs import clear_queue, messages, queued_keys
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]


@pytest.fixture
def docs(conn: Conn, minilm: str) -> int:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    row = conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (minilm,)).fetchone()
    assert row is not None
    conn.execute("INSERT INTO docs VALUES (1, 'one'), (2, 'two')")
    clear_queue(conn)
    return int(row[0])


def table(conn: Conn) -> dict[int, tuple[str | None, bool]]:
    rows = conn.execute("SELECT id, body, embedding IS NOT NULL FROM docs ORDER BY id").fetchall()
    return {i: (b, e) for i, b, e in rows}


def settle(conn: Conn, run_once: Callable[..., Worker]) -> None:
    run_once()
    assert messages(conn) == []
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)


def test_copy(conn: Conn, docs: int, run_once: Callable[..., Worker]) -> None:
    with conn.cursor().copy("COPY docs (id, body) FROM STDIN") as copy:
        for row in [(3, "three"), (4, ""), (5, None), (6, "six")]:
            copy.write_row(row)
    assert queued_keys(conn, docs) == [3, 6]
    settle(conn, run_once)
    assert {k: v[1] for k, v in table(conn).items()} == {
        1: False,
        2: False,
        3: True,
        4: False,
        5: False,
        6: True,
    }


def test_multi_row_insert_skips_blank_rows_and_rows_that_bring_their_embedding(
    conn: Conn, docs: int, run_once: Callable[..., Worker]
) -> None:
    conn.execute(
        "INSERT INTO docs (id, body, embedding) VALUES (3, 'three', NULL), (4, NULL, NULL),"
        " (5, 'restored', array_fill(0.1, ARRAY[384])::halfvec)"
    )
    assert queued_keys(conn, docs) == [3]


def test_insert_on_conflict_do_update(
    conn: Conn, docs: int, run_once: Callable[..., Worker]
) -> None:
    conn.execute(
        "INSERT INTO docs VALUES (1, 'one, changed'), (2, 'two'), (3, 'three')"
        " ON CONFLICT (id) DO UPDATE SET body = excluded.body"
    )
    # The new row from the INSERT trigger, the changed one from the UPDATE trigger; row 2's
    # content did not change.
    assert sorted(queued_keys(conn, docs)) == [1, 3]
    settle(conn, run_once)
    assert table(conn) == {1: ("one, changed", True), 2: ("two", False), 3: ("three", True)}


def test_merge(conn: Conn, docs: int, run_once: Callable[..., Worker]) -> None:
    conn.execute(
        "MERGE INTO docs d USING (VALUES (1, 'one, merged'), (2, NULL), (3, 'three')) AS s(id, body)"
        " ON d.id = s.id"
        " WHEN MATCHED AND s.body IS NULL THEN DELETE"
        " WHEN MATCHED THEN UPDATE SET body = s.body"
        " WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.body)"
    )
    assert sorted(queued_keys(conn, docs)) == [1, 3]
    settle(conn, run_once)
    assert table(conn) == {1: ("one, merged", True), 3: ("three", True)}


def test_update_of_the_key(conn: Conn, docs: int, run_once: Callable[..., Worker]) -> None:
    conn.execute("UPDATE docs SET id = 10 WHERE id = 1")
    assert queued_keys(conn, docs) == [10]
    settle(conn, run_once)
    assert table(conn) == {2: ("two", False), 10: ("one", True)}


def test_delete_and_truncate_acknowledge_pending_jobs(
    conn: Conn, docs: int, run_once: Callable[..., Worker]
) -> None:
    conn.execute("INSERT INTO docs VALUES (3, 'three'), (4, 'four')")
    conn.execute("DELETE FROM docs WHERE id = 3")
    assert queued_keys(conn, docs) == [3, 4]  # a DELETE queues nothing
    conn.execute("TRUNCATE docs")
    settle(conn, run_once)  # the jobs of gone rows are acknowledged, not retried or dead
    assert table(conn) == {}


def test_writes_through_a_view_with_instead_of_triggers(
    conn: Conn, docs: int, run_once: Callable[..., Worker]
) -> None:
    conn.execute("CREATE VIEW docs_view AS SELECT id, body AS text FROM docs")
    conn.execute(
        "CREATE FUNCTION docs_view_write() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF TG_OP = 'INSERT' THEN INSERT INTO docs VALUES (NEW.id, NEW.text);"
        " ELSE UPDATE docs SET body = NEW.text WHERE id = OLD.id; END IF;"
        " RETURN NEW; END $$"
    )
    conn.execute(
        "CREATE TRIGGER w INSTEAD OF INSERT OR UPDATE ON docs_view"
        " FOR EACH ROW EXECUTE FUNCTION docs_view_write()"
    )
    conn.execute("INSERT INTO docs_view VALUES (3, 'three'), (4, 'four')")
    conn.execute("UPDATE docs_view SET text = 'two, via the view' WHERE id = 2")
    assert queued_keys(conn, docs) == [3, 4, 2]
    settle(conn, run_once)
    assert table(conn) == {
        1: ("one", False),
        2: ("two, via the view", True),
        3: ("three", True),
        4: ("four", True),
    }
