"""Row keys of every shape: composite primary keys of several types, declared unique keys,
end to end through the worker (issue 13 §1)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.support import jobs, stores
from tests.support.jobs import clear_queue, messages, move_inbox, queued_keys
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]


def embedded(conn: Conn, table: str, key: str) -> dict[str, bool]:
    rows = conn.execute(f"SELECT ({key})::text, embedding IS NOT NULL FROM {table}").fetchall()
    return dict(rows)


@pytest.mark.parametrize(
    ("columns", "rows", "expected"),
    [
        (
            "tenant bigint, id integer",
            "(1, 1, 'alpha'), (1, 2, 'beta'), (2, 1, 'gamma')",
            [[1, 1], [1, 2], [2, 1]],
        ),
        (
            "tenant uuid, slug text",
            "('00000000-0000-0000-0000-00000000000a', 'a''b', 'alpha'),"
            " ('00000000-0000-0000-0000-00000000000b', 'ü ,\"x', 'beta')",
            [
                ["00000000-0000-0000-0000-00000000000a", "a'b"],
                ["00000000-0000-0000-0000-00000000000b", 'ü ,"x'],
            ],
        ),
        (
            "day date, at timestamptz, n bigint",
            "('2026-01-02', '2026-01-02 03:04:05.678+00', 7, 'alpha')",
            [["2026-01-02", "2026-01-02T03:04:05.678+00:00", 7]],
        ),
    ],
)
def test_composite_keys_are_queued_as_arrays_and_embedded(
    conn: Conn,
    run_once: Callable[..., Worker],
    minilm: str,
    columns: str,
    rows: str,
    expected: list[Any],
) -> None:
    names = ", ".join(c.split()[0] for c in columns.split(", "))
    conn.execute("SET TimeZone = 'UTC'")
    conn.execute(f"CREATE TABLE docs ({columns}, body text, PRIMARY KEY ({names}))")
    target = stores.watch_with(conn, "docs", "body", model=minilm)
    conn.execute(f"INSERT INTO docs VALUES {rows}")
    assert queued_keys(conn, target) == expected
    # The schema reads the triggers' column shape as the worker does (sweep(), status), and
    # moves it into the queue as the same keys.
    assert [
        r[0]
        for r in conn.execute(
            "SELECT k FROM embeddings.inbox i,"
            " embeddings_internal.message_keys(jsonb_build_object('columns', i.columns)) k"
        ).fetchall()
    ] == expected
    move_inbox(conn)
    assert jobs.keys_read_by_the_database(conn) == expected
    assert conn.execute(
        "SELECT sum(embeddings.message_key_count(message))::int FROM pgmq.q_embedding_jobs"
    ).fetchone() == (len(expected),)
    assert conn.execute(
        "SELECT key_columns::text[], cardinality(key_types) FROM embeddings.targets"
    ).fetchone() == (names.split(", "), len(names.split(", ")))

    run_once()
    assert set(embedded(conn, "docs", f"({names})").values()) == {True}
    assert messages(conn) == []
    # An UPDATE of the content re-embeds by the same key tuple; one of another column does not.
    conn.execute("UPDATE docs SET body = body || ' (edited)' WHERE body = 'alpha'")
    assert len(queued_keys(conn, target)) == 1
    run_once()
    assert set(embedded(conn, "docs", f"({names})").values()) == {True}


def test_a_declared_unique_key_serves_a_table_without_primary_key(
    conn: Conn, run_once: Callable[..., Worker], minilm: str
) -> None:
    conn.execute(
        "CREATE TABLE notes (region text NOT NULL, n int NOT NULL, body text, UNIQUE (n, region))"
    )
    conn.execute("INSERT INTO notes VALUES ('eu', 1, 'first'), ('us', 1, 'second')")
    target = conn.execute(
        "SELECT embeddings.watch('notes', 'body', model => %s, key => array['region', 'n'])",
        (minilm,),
    ).fetchone()
    assert target is not None
    assert sorted(queued_keys(conn, target[0])) == [["eu", 1], ["us", 1]]
    run_once()
    assert embedded(conn, "notes", "(region, n)") == {"(eu,1)": True, "(us,1)": True}


def test_composite_failures_show_the_key_and_retry(
    conn: Conn, run_once: Callable[..., Worker], minilm: str
) -> None:
    stores.watch_poisoned(
        conn,
        minilm,
        "tenant int, id int, body text, PRIMARY KEY (tenant, id)",
        "(1, 1, 'fine'), (1, 2, 'poison')",
    )
    run_once(max_attempts=1)
    failures = conn.execute("SELECT row_key, last_error FROM embeddings.failures").fetchall()
    assert len(failures) == 1
    assert failures[0][0] == [1, 2]
    assert "no poison" in failures[0][1]
    assert embedded(conn, "docs", "(tenant, id)") == {"(1,1)": True, "(1,2)": False}
    conn.execute("UPDATE docs SET body = 'cured' WHERE id = 2")
    clear_queue(conn)
    assert conn.execute("SELECT embeddings.retry_failures()").fetchone() == (1,)
    run_once()
    assert embedded(conn, "docs", "(tenant, id)") == {"(1,1)": True, "(1,2)": True}


@pytest.mark.parametrize(
    ("key", "values"),
    [
        ("tenant int, id int, PRIMARY KEY (tenant, id)", "1, 2"),
        ("id timestamptz PRIMARY KEY", "'2026-01-02 03:04:05+00'"),
        ("id text PRIMARY KEY", "'a b'"),
    ],
    ids=["composite", "timestamptz", "text"],
)
def test_a_dead_letter_is_resolved_when_its_row_is_embedded_later_for_any_key(
    conn: Conn, run_once: Callable[..., Worker], minilm: str, key: str, values: str
) -> None:
    # The dead letter keeps the key as the job carried it (a JSON array, an ISO timestamp);
    # resolving it must not depend on that text equalling the key's canonical text.
    conn.execute(f"CREATE TABLE docs ({key}, body text)")
    conn.execute(
        "CREATE FUNCTION picky(d docs) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$"
        " BEGIN IF d.body = 'poison' THEN RAISE EXCEPTION 'no poison'; END IF;"
        " RETURN d.body; END $$"
    )
    conn.execute("SELECT embeddings.watch('docs', 'picky', model => %s)", (minilm,))
    conn.execute(f"INSERT INTO docs VALUES ({values}, 'poison')")
    run_once(max_attempts=1)
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (1,)

    conn.execute("UPDATE docs SET body = 'cured'")  # the trigger queues the row again
    run_once()

    assert conn.execute("SELECT count(*) FROM docs WHERE embedding IS NOT NULL").fetchone() == (1,)
    assert conn.execute("SELECT row_key FROM embeddings.failures").fetchall() == []


def test_a_composite_key_row_changed_after_reading_is_not_overwritten(
    conn: Conn, run_once: Callable[..., Worker], minilm: str
) -> None:
    """The stale-write guard matches composite keys: the newer content's job wins."""
    conn.execute("CREATE TABLE docs (a int, b text, body text, PRIMARY KEY (a, b))")
    target = conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s)", (minilm,)
    ).fetchone()
    assert target is not None
    conn.execute("INSERT INTO docs VALUES (1, 'x', 'old words')")
    # A job for a key that does not exist is acknowledged; a malformed key is dead-lettered.
    conn.execute(
        "SELECT pgmq.send('embedding_jobs', jsonb_build_object('target', %s::int,"
        " 'keys', '[[2, \"nope\"], [1]]'::jsonb))",
        (target[0],),
    )
    run_once(max_attempts=1)
    assert embedded(conn, "docs", "(a, b)") == {"(1,x)": True}
    bad = conn.execute("SELECT row_key FROM embeddings.failures").fetchall()
    assert bad == [([1],)]
    assert messages(conn) == []


def test_sweep_finds_composite_rows_without_jobs_in_slices(conn: Conn, minilm: str) -> None:
    conn.execute("CREATE TABLE docs (a int, b text, body text, PRIMARY KEY (a, b))")
    target = conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s, triggers => false)", (minilm,)
    ).fetchone()
    assert target is not None
    clear_queue(conn)
    conn.execute(
        "INSERT INTO docs SELECT g % 3, 'k' || g, 'text ' || g FROM generate_series(1, 7) g"
    )
    conn.execute(
        "SELECT pgmq.send('embedding_jobs', jsonb_build_object('target', %s::int,"
        " 'keys', '[[1, \"k1\"]]'::jsonb))",
        (target[0],),
    )
    swept = [conn.execute("SELECT embeddings.sweep(max_rows => 3)").fetchone() for _ in range(4)]
    # Slices of 3 in key order: (0,k3) (0,k6) (1,k1)*, (1,k4) (1,k7) (2,k2), (2,k5); the row
    # with a pending job (*) is left alone; a short slice starts again from the top.
    assert [s[0] for s in swept if s] == [2, 3, 1, 0]
    assert sorted(map(tuple, queued_keys(conn, target[0]))) == sorted(
        (g % 3, f"k{g}") for g in range(1, 8)
    )


def test_a_content_function_reading_several_columns_and_jsonb(
    conn: Conn, run_once: Callable[..., Worker], minilm: str
) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, title text, meta jsonb)")
    conn.execute(
        "CREATE FUNCTION doc_text(d docs) RETURNS text LANGUAGE sql IMMUTABLE AS"
        " $$ SELECT d.title || ': ' || coalesce(d.meta ->> 'summary', '') $$"
    )
    target = stores.watch_with(conn, "docs", "doc_text", model=minilm)
    conn.execute("""INSERT INTO docs VALUES (1, 'Cats', '{"summary": "they sleep"}')""")
    conn.execute("""UPDATE docs SET meta = '{"summary": "they sleep", "tags": []}'""")
    assert queued_keys(conn, target) == [1]  # the text did not change
    conn.execute("""UPDATE docs SET meta = '{"summary": "they purr"}'""")
    assert queued_keys(conn, target) == [1, 1]
    run_once()
    assert embedded(conn, "docs", "id") == {"1": True}
