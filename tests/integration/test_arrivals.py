"""All the ways rows arrive or leave (issue 13 §6, issue 25 §4): exactly what each statement
queues, and what ends in the table once the worker ran; for every store of vectors alike (the
row, a side table, a chunk table: tests/support/stores.py). Side and chunk tables have no foreign
key to the table: a DELETE queues its rows' keys, an UPDATE of the key the old key too, and the
worker deletes what they left there; a TRUNCATE empties them at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.support import stores
from tests.support.jobs import clear_queue, dead_letters, messages, queued_keys
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]


@pytest.fixture(params=stores.ALL_STORES)
def store(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def docs(conn: Conn, minilm: str, store: str) -> int:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    target = stores.watch(conn, store, minilm)
    conn.execute("INSERT INTO docs VALUES (1, 'one'), (2, 'two')")
    clear_queue(conn)
    return target


def table(conn: Conn, store: str) -> dict[int, tuple[str | None, bool]]:
    vectors = stores.embedded(conn, store)
    rows = conn.execute("SELECT id, body FROM docs ORDER BY id").fetchall()
    return {i: (b, vectors[i]) for i, b in rows}


def leftovers(conn: Conn, store: str) -> int:
    """Rows of the side or chunk table whose row is gone (none once the worker ran)."""
    if store == "row":
        return 0
    found = conn.execute(
        "SELECT coalesce(side_table, chunk_table)::text FROM embeddings.targets LIMIT 1"
    ).fetchone()
    assert found is not None
    row = conn.execute(
        f"SELECT count(*) FROM {found[0]} x WHERE NOT EXISTS (SELECT FROM docs d WHERE d.id = x.id)"
    ).fetchone()
    assert row is not None
    return int(row[0])


def settle(conn: Conn, store: str, run_once: Callable[..., Worker]) -> None:
    run_once()
    assert messages(conn) == []
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)
    assert leftovers(conn, store) == 0


def test_copy(conn: Conn, store: str, docs: int, run_once: Callable[..., Worker]) -> None:
    with conn.cursor().copy("COPY docs (id, body) FROM STDIN") as copy:
        for row in [(3, "three"), (4, ""), (5, None), (6, "six")]:
            copy.write_row(row)
    assert queued_keys(conn, docs) == [3, 6]
    settle(conn, store, run_once)
    assert {k: v[1] for k, v in table(conn, store).items()} == {
        1: False,
        2: False,
        3: True,
        4: False,
        5: False,
        6: True,
    }


def test_multi_row_insert_skips_blank_rows(
    conn: Conn, store: str, docs: int, run_once: Callable[..., Worker]
) -> None:
    conn.execute("INSERT INTO docs (id, body) VALUES (3, 'three'), (4, NULL), (5, '')")
    assert queued_keys(conn, docs) == [3]


def test_multi_row_insert_skips_rows_that_bring_their_embedding(
    conn: Conn, docs: int, store: str, run_once: Callable[..., Worker]
) -> None:
    if store != "row":
        pytest.skip("only the row store's table has an embedding column to bring")
    conn.execute(
        "INSERT INTO docs (id, body, embedding) VALUES (3, 'three', NULL), (4, NULL, NULL),"
        " (5, 'restored', array_fill(0.1, ARRAY[384])::halfvec)"
    )
    assert queued_keys(conn, docs) == [3]


def test_insert_on_conflict_do_update(
    conn: Conn, store: str, docs: int, run_once: Callable[..., Worker]
) -> None:
    conn.execute(
        "INSERT INTO docs VALUES (1, 'one, changed'), (2, 'two'), (3, 'three')"
        " ON CONFLICT (id) DO UPDATE SET body = excluded.body"
    )
    # The new row from the INSERT trigger, the changed one from the UPDATE trigger; row 2's
    # content did not change.
    assert sorted(queued_keys(conn, docs)) == [1, 3]
    settle(conn, store, run_once)
    assert table(conn, store) == {1: ("one, changed", True), 2: ("two", False), 3: ("three", True)}


def test_merge(conn: Conn, store: str, docs: int, run_once: Callable[..., Worker]) -> None:
    conn.execute("INSERT INTO docs VALUES (4, 'four')")
    run_once()
    conn.execute(
        "MERGE INTO docs d USING (VALUES (1, 'one, merged'), (4, NULL), (3, 'three')) AS s(id, body)"
        " ON d.id = s.id"
        " WHEN MATCHED AND s.body IS NULL THEN DELETE"
        " WHEN MATCHED THEN UPDATE SET body = s.body"
        " WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.body)"
    )
    # The deleted row's key too where its vector is elsewhere (to delete that).
    assert sorted(queued_keys(conn, docs)) == ([1, 3] if store == "row" else [1, 3, 4])
    settle(conn, store, run_once)
    assert table(conn, store) == {
        1: ("one, merged", True),
        2: ("two", False),
        3: ("three", True),
    }


def test_update_of_the_key(
    conn: Conn, store: str, docs: int, run_once: Callable[..., Worker]
) -> None:
    run_once()  # nothing queued: rows 1 and 2 have no vector
    conn.execute("INSERT INTO docs VALUES (3, 'three')")
    run_once()
    conn.execute("UPDATE docs SET id = 10 WHERE id = 1")
    conn.execute("UPDATE docs SET id = 30 WHERE id = 3")
    # The old key too where the vector is elsewhere: what it left there goes.
    assert sorted(queued_keys(conn, docs)) == ([10, 30] if store == "row" else [1, 3, 10, 30])
    settle(conn, store, run_once)
    assert table(conn, store) == {2: ("two", False), 10: ("one", True), 30: ("three", True)}


def test_delete_and_truncate_acknowledge_pending_jobs(
    conn: Conn, store: str, docs: int, run_once: Callable[..., Worker]
) -> None:
    conn.execute("INSERT INTO docs VALUES (3, 'three'), (4, 'four')")
    conn.execute("DELETE FROM docs WHERE id = 3")
    # A DELETE queues nothing, or (vectors elsewhere) the deleted row's key.
    assert queued_keys(conn, docs) == ([3, 4] if store == "row" else [3, 4, 3])
    conn.execute("TRUNCATE docs")
    settle(conn, store, run_once)  # the jobs of gone rows are acknowledged, not retried or dead
    assert table(conn, store) == {}


def test_a_deleted_row_takes_its_dead_letter_along(
    conn: Conn, store: str, docs: int, run_once: Callable[..., Worker]
) -> None:
    """A row dead-lettered, then deleted: the job its delete queued (vectors elsewhere) found it
    gone, and its dead letter stayed, counted in status's failed_jobs, until a retry by hand. A
    row store's DELETE queues nothing: sweep(), which walks the dead letters a step at a time,
    finds its row gone (its letter stayed through sweep, sweep --verify and the worker)."""
    conn.execute("INSERT INTO docs VALUES (3, 'three')")
    clear_queue(conn)
    dead_letters(conn, [3], target_id=docs)
    conn.execute("DELETE FROM docs WHERE id = 3")
    if store == "row":
        assert queued_keys(conn, docs) == []
        conn.execute("SELECT embeddings.sweep(verify => true)")
    else:
        assert queued_keys(conn, docs) == [3]
    settle(conn, store, run_once)


def test_delete_and_truncate_of_embedded_rows(
    conn: Conn, store: str, docs: int, run_once: Callable[..., Worker]
) -> None:
    conn.execute("INSERT INTO docs VALUES (3, 'three'), (4, 'four'), (5, 'five')")
    run_once()
    conn.execute("DELETE FROM docs WHERE id = 3")
    settle(conn, store, run_once)
    assert table(conn, store) == {
        1: ("one", False),
        2: ("two", False),
        4: ("four", True),
        5: ("five", True),
    }
    conn.execute("TRUNCATE docs")
    assert leftovers(conn, store) == 0  # at once, in the TRUNCATE's transaction
    conn.execute("INSERT INTO docs VALUES (4, 'four, again')")
    settle(conn, store, run_once)
    assert table(conn, store) == {4: ("four, again", True)}


def test_writes_through_a_view_with_instead_of_triggers(
    conn: Conn, store: str, docs: int, run_once: Callable[..., Worker]
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
    settle(conn, store, run_once)
    assert table(conn, store) == {
        1: ("one", False),
        2: ("two, via the view", True),
        3: ("three", True),
        4: ("four", True),
    }
