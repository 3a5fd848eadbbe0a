"""embeddings.sweep(): re-queues rows that lost their job, a bounded slice at a time."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from tests.support.jobs import clear_queue, dead_letters, move_inbox, queued_keys
from tests.support.process import run_cli

Conn = psycopg.Connection[Any]


@pytest.fixture
def docs(conn: Conn) -> int:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs SELECT g, 'row ' || g FROM generate_series(1, 25) g")
    conn.execute("INSERT INTO docs VALUES (100, '   '), (101, NULL)")
    row = conn.execute("SELECT embeddings.watch('docs', 'body')").fetchone()
    assert row is not None
    return int(row[0])


def sweep(conn: Conn, max_rows: int = 1000) -> int:
    row = conn.execute("SELECT embeddings.sweep(%s)", (max_rows,)).fetchone()
    assert row is not None
    return int(row[0])


def test_nothing_to_do_when_every_row_has_a_job(conn: Conn, docs: int) -> None:
    assert sweep(conn) == 0
    # watch() queued whitespace-only row 100 too (the write path does not regex-scan text)
    assert sorted(queued_keys(conn, docs)) == [*range(1, 26), 100]


def test_rows_without_a_job_are_queued_once(conn: Conn, docs: int) -> None:
    clear_queue(conn)  # jobs lost
    conn.execute("UPDATE docs SET embedding = array_fill(0.1, ARRAY[384])::halfvec WHERE id <= 5")
    assert sweep(conn) == 20
    assert sorted(queued_keys(conn, docs)) == list(range(6, 26))  # blank rows never
    assert sweep(conn) == 0  # now pending


def test_work_per_run_is_bounded_and_wraps_around(conn: Conn, docs: int) -> None:
    clear_queue(conn)
    assert [sweep(conn, max_rows=10) for _ in range(4)] == [10, 10, 5, 0]
    assert sorted(queued_keys(conn, docs)) == list(range(1, 26))


def test_dead_lettered_rows_wait_for_a_retry(conn: Conn, docs: int) -> None:
    clear_queue(conn)
    dead_letters(conn, [7], target_id=docs)
    assert sweep(conn) == 24
    assert 7 not in queued_keys(conn, docs)


def failed_keys(conn: Conn) -> list[Any]:
    return [k for (k,) in conn.execute("SELECT row_key FROM embeddings.failures ORDER BY id")]


@pytest.mark.parametrize("verify", [False, True])
def test_the_dead_letters_of_deleted_rows_are_resolved(conn: Conn, docs: int, verify: bool) -> None:
    """A row store's DELETE queues no job that would find the row gone: its dead letter stayed
    for good, counted in status's failed_jobs (and doctor's FAIL)."""
    conn.execute("CREATE TABLE pairs (a int, b text, body text, PRIMARY KEY (a, b))")
    conn.execute("INSERT INTO pairs VALUES (1, 'x', 'one'), (2, 'y', 'two')")
    row = conn.execute("SELECT embeddings.watch('pairs', 'body')").fetchone()
    assert row is not None
    pairs = int(row[0])
    dead_letters(conn, [7, 8, 9], target_id=docs)
    dead_letters(conn, [[1, "x"], [2, "y"]], target_id=pairs)
    conn.execute("DELETE FROM docs WHERE id IN (8, 9)")
    conn.execute("DELETE FROM pairs WHERE a = 2")

    conn.execute("SELECT embeddings.sweep(verify => %s)", (verify,))
    assert failed_keys(conn) == [7, [1, "x"]]
    counted = "SELECT sum(failed_jobs)::int FROM embeddings.status"
    assert conn.execute(counted).fetchone() == (2,)


def test_resolving_dead_letters_is_bounded_and_wraps_around(conn: Conn, docs: int) -> None:
    """100,000 dead letters of deleted rows: a sweep of 1,000 rows resolves at most 1,000 of
    them (the next from where the last stopped), and those of rows there are stay."""
    dead_letters(conn, [3], target_id=docs)
    conn.execute(
        "INSERT INTO embeddings.failures (target_id, target, row_key, queue, message, attempts,"
        " last_error) SELECT %s, 'public.docs.embedding', to_jsonb(g), 'embedding_jobs',"
        " jsonb_build_object('target', %s, 'keys', jsonb_build_array(g)), 5, 'boom'"
        " FROM generate_series(1000, 100999) g",
        (docs, docs),
    )
    dead_letters(conn, [4], target_id=docs)
    left = "SELECT count(*)::int FROM embeddings.failures"
    sweep(conn)
    assert conn.execute(left).fetchone() == (100_002 - 999,)  # (3 was one of the first 1,000)
    sweep(conn, max_rows=50_000)
    sweep(conn, max_rows=50_000)
    assert failed_keys(conn) == [3, 4]
    assert sweep(conn) == 0 and failed_keys(conn) == [3, 4]  # (wrapped around: nothing more)


def sweep_says(conn: Conn, max_rows: int = 1000) -> list[str]:
    """The NOTICEs and WARNINGs of one sweep()."""
    said: list[str] = []
    handler = said.append
    conn.add_notice_handler(lambda diag: handler(diag.message_primary or ""))
    sweep(conn, max_rows)
    return said


def test_a_sweep_says_how_many_dead_letters_it_resolved_and_whether_more_are_left(
    conn: Conn, docs: int, dsn: str
) -> None:
    """sweep() resolved up to max_rows dead letters of a table each call and said nothing of
    it: its result counts the rows queued only."""
    conn.execute(
        "INSERT INTO embeddings.failures (target_id, target, row_key, queue, message, attempts,"
        " last_error) SELECT %s, 'public.docs.embedding', to_jsonb(g), 'embedding_jobs',"
        " jsonb_build_object('target', %s, 'keys', jsonb_build_array(g)), 5, 'boom'"
        " FROM generate_series(1000, 1014) g",
        (docs, docs),
    )
    dead_letters(conn, [3], target_id=docs)  # a row there: kept
    said = (
        "embeddings.sweep(): resolved {} dead letter(s) whose key names no row of"
        " public.docs.embedding now (deleted, or its key changed)"
    )
    more = "; more are left to look at: the next sweep takes the next 10"

    assert sweep_says(conn, max_rows=10) == [said.format(10) + more]
    assert sweep_says(conn, max_rows=10) == [said.format(5)]  # and 3's, kept
    assert sweep_says(conn, max_rows=10) == []  # (wrapped around: nothing to resolve)
    assert failed_keys(conn) == [3]

    conn.execute(
        "INSERT INTO embeddings.failures (target_id, target, row_key, queue, message,"
        " attempts, last_error) SELECT %s, 'public.docs.embedding', to_jsonb(g),"
        " 'embedding_jobs', jsonb_build_object('target', %s), 5, 'boom'"
        " FROM generate_series(2000, 2011) g",
        (docs, docs),
    )
    conn.commit()
    cli = run_cli("sweep", "--max-rows", "10", env={"DATABASE_URL": dsn}, check=True)
    assert f"notice: {said.format(9)}{more}\n" in cli.stderr, cli.stderr  # (3 was looked at)
    assert cli.stdout.startswith("queued 0 row(s)")
    json_cli = run_cli("sweep", "--max-rows", "10", "--json", env={"DATABASE_URL": dsn})
    assert json.loads(json_cli.stdout)["said"] == [f"notice: {said.format(3)}"]


def test_supabase_shaped_jobs_count_as_pending(conn: Conn) -> None:
    conn.execute("CREATE TABLE documents (id int PRIMARY KEY, content text)")
    conn.execute("INSERT INTO documents VALUES (1, 'a'), (2, 'b')")
    conn.execute("SELECT embeddings.watch('documents', 'content', triggers => false)")
    clear_queue(conn)
    conn.execute(
        """SELECT pgmq.send('embedding_jobs', '{"id": 1, "schema": "public", "table": "documents", "contentFunction": "x", "embeddingColumn": "embedding"}')"""
    )
    assert sweep(conn) == 1


def test_old_archived_jobs_are_pruned(conn: Conn, docs: int) -> None:
    conn.execute("INSERT INTO docs VALUES (200, 'a live job')")
    move_inbox(conn)  # one job message each (moved together, they would share one)
    conn.execute("INSERT INTO docs VALUES (201, 'a second live job')")
    move_inbox(conn)
    conn.execute(
        "SELECT pgmq.archive('embedding_jobs', array_agg(msg_id)) FROM pgmq.q_embedding_jobs"
    )
    conn.execute(
        "UPDATE pgmq.a_embedding_jobs SET archived_at = now() - interval '8 days' WHERE msg_id = 1"
    )
    conn.execute("SELECT embeddings.sweep(1000, '7 days')")
    assert conn.execute(
        "SELECT count(*) FROM pgmq.a_embedding_jobs WHERE msg_id = 1"
    ).fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM pgmq.a_embedding_jobs").fetchone() != (0,)


def test_scheduling_needs_pg_cron_and_says_so(conn: Conn) -> None:
    installed = conn.execute(
        "SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron'"
    ).fetchone()
    assert installed == (0,), "test databases are not cron.database_name"
    with pytest.raises(
        psycopg.errors.RaiseException, match="pg_cron is not installed in this database"
    ):
        conn.execute("SELECT embeddings.schedule_sweep()")
    assert conn.execute("SELECT embeddings.unschedule_sweep()").fetchone() == (False,)


def test_a_raising_content_function_is_isolated_per_target_and_per_row(
    conn: Conn, docs: int
) -> None:
    conn.execute("CREATE TABLE notes (id bigint PRIMARY KEY, body text)")
    conn.execute(
        "CREATE FUNCTION picky(n notes) RETURNS text LANGUAGE plpgsql STABLE AS $$ BEGIN"
        " IF n.id = 2 THEN RAISE EXCEPTION 'cannot read note %', n.id; END IF;"
        " RETURN n.body; END $$"
    )
    conn.execute("INSERT INTO notes VALUES (1, 'one'), (2, 'two'), (3, 'three'), (4, '  ')")
    row = conn.execute("SELECT embeddings.watch('notes', 'picky')").fetchone()
    assert row is not None
    notes = int(row[0])
    clear_queue(conn)  # every job lost

    assert sweep(conn) == 25 + 3
    assert sorted(queued_keys(conn, docs)) == list(range(1, 26))  # the other target is swept
    # The raising row is queued too: the worker dead-letters it with its error.
    assert sorted(queued_keys(conn, notes)) == [1, 2, 3]
    assert sweep(conn) == 0  # all pending now
