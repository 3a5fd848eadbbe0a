"""embeddings.status in constant time (issue 16 section 3): large tables' row counts are
estimated from the catalog and ANALYZE's statistics without reading the table, within stated
bounds; pending and failed stay exact; embeddings.status_exact and `status --exact` count."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import psycopg
import pytest

from tests.support.fetch import fetch_row, fetch_value
from tests.support.plans import nested_plans

Conn = psycopg.Connection[Any]

TARGET = "public.docs.embedding"
VECTOR = "'[0.1,0.2,0.3,0.4]'::halfvec"
ESTIMATED_COUNTS = ("total_rows", "embedded_rows", "cleared_rows")


def tiny_model(conn: Conn) -> None:
    conn.execute(
        "INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)"
        " VALUES ('tiny4', 4, 512, 'mean')"
    )


def fill(conn: Conn, table: str = "docs", first: int = 1) -> None:
    """3000 rows from `first`: 2000 embedded, 500 waiting for one, 300 NULL and 200 blank."""
    conn.execute(
        f"INSERT INTO {table} (id, body, embedding)"
        f" SELECT i, 'text ' || i, {VECTOR} FROM generate_series(%(f)s, %(f)s + 1999) i",
        {"f": first},
    )
    conn.execute(
        f"INSERT INTO {table} (id, body)"
        " SELECT i, CASE WHEN i < %(f)s + 2500 THEN 'text ' || i"
        "                WHEN i < %(f)s + 2800 THEN NULL ELSE '  ' END"
        " FROM generate_series(%(f)s + 2000, %(f)s + 2999) i",
        {"f": first},
    )


def flush_statistics(conn: Conn) -> None:
    """This session's row counts, published to the statistics system now, not within a second."""
    conn.execute("SELECT pg_stat_force_next_flush()")


def watched_docs(conn: Conn) -> None:
    tiny_model(conn)
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text, embedding halfvec(4))")
    fill(conn)
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'tiny4')")
    finish_backfills(conn)
    flush_statistics(conn)


def finish_backfills(conn: Conn) -> None:
    """Queues what watch()'s backfill has still to pass: the queue then holds every pending key
    (status counts a running backfill's rest as an estimate on large tables)."""
    conn.execute(
        "SELECT embeddings_internal.backfill_step(b.target_id, 1000000) FROM embeddings.backfills b"
    )
    assert conn.execute("SELECT count(*) FROM embeddings.backfills").fetchone() == (0,)


def status(conn: Conn, source: str = "embeddings.status") -> dict[str, Any]:
    cur = conn.execute(f"SELECT * FROM {source} WHERE target = %s", (TARGET,))
    row = cur.fetchone()
    assert row is not None and cur.description is not None
    return dict(zip([c.name for c in cur.description], row, strict=True))


def exact_counts(conn: Conn) -> dict[str, int]:
    row = fetch_row(
        conn,
        "SELECT count(*), count(embedding), count(*) FILTER (WHERE body !~ '[^[:space:]]'"
        " OR body IS NULL) FROM docs",
    )
    return dict(zip(ESTIMATED_COUNTS, row, strict=True))


def reads_of(conn: Conn, table: str) -> int:
    """Scans of `table` so far (sequential and index), as the statistics system counts them."""
    conn.execute("SELECT pg_stat_force_next_flush()")  # our own pending counts, flushed
    conn.execute("SELECT pg_stat_clear_snapshot()")
    return int(
        fetch_value(
            conn,
            "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables"
            " WHERE relid = %s::regclass",
            (table,),
        )
    )


def test_estimates_after_analyze_are_within_bounds(conn: Conn) -> None:
    watched_docs(conn)
    conn.execute("ANALYZE docs")
    conn.execute("SET embeddings.status_exact_rows = 0")  # estimate even this small table

    row = status(conn)

    assert row["estimated"] is True
    truth = exact_counts(conn)
    for name in ESTIMATED_COUNTS:  # the documented bound: 2% of the rows after ANALYZE
        assert abs(row[name] - truth[name]) <= 0.02 * truth["total_rows"], (name, row, truth)
    # from the queue, exact: the 500 rows without an embedding and the 200 blank ones (to clear)
    assert (row["pending_jobs"], row["failed_jobs"]) == (700, 0)


def test_estimates_follow_the_table_growing_between_analyzes(conn: Conn) -> None:
    watched_docs(conn)
    conn.execute("ANALYZE docs")
    conn.execute("SET embeddings.status_exact_rows = 0")
    conn.execute("ALTER TABLE docs SET (autovacuum_enabled = false)")  # no ANALYZE meanwhile
    fill(conn, first=3001)  # the table doubles; pg_class still says 3000 rows
    conn.execute("UPDATE docs SET embedding = NULL WHERE id <= 1000")  # updates: no new rows
    flush_statistics(conn)

    row = status(conn)

    assert row["total_rows"] == 6000  # live rows: inserts and deletes as they commit
    # shares of the last ANALYZE (2000 of 3000 embedded) scaled to the rows now
    assert abs(row["embedded_rows"] - 4000) <= 0.02 * 6000, row


def test_without_statistics_counters_the_catalog_estimates(conn: Conn) -> None:
    watched_docs(conn)
    conn.execute("ANALYZE docs")
    conn.execute("SELECT pg_stat_reset()")  # as after a crash: the counters start from zero
    conn.execute("SET embeddings.status_exact_rows = 0")

    row = status(conn)

    assert conn.execute("SELECT n_live_tup FROM pg_stat_user_tables").fetchone() == (0,)
    assert row["total_rows"] == 3000  # pg_class: what the ANALYZE counted


def test_partitioned_targets_sum_their_partitions(conn: Conn) -> None:
    tiny_model(conn)
    conn.execute(
        "CREATE TABLE docs (id int PRIMARY KEY, body text, embedding halfvec(4))"
        " PARTITION BY RANGE (id)"
    )
    conn.execute("CREATE TABLE docs_a PARTITION OF docs FOR VALUES FROM (1) TO (3001)")
    conn.execute("CREATE TABLE docs_b PARTITION OF docs FOR VALUES FROM (3001) TO (6001)")
    fill(conn)
    fill(conn, first=3001)
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'tiny4')")
    flush_statistics(conn)
    conn.execute("ANALYZE docs_a")
    conn.execute("ANALYZE docs_b")

    row = status(conn, "embeddings_internal.target_status(exact => false)")

    truth = exact_counts(conn)
    assert truth == {"total_rows": 6000, "embedded_rows": 4000, "cleared_rows": 1000}
    for name in ESTIMATED_COUNTS:
        assert abs(row[name] - truth[name]) <= 0.02 * truth["total_rows"], (name, row, truth)


def test_counts_not_known_yet_are_null_not_guessed(conn: Conn) -> None:
    watched_docs(conn)  # never analyzed: no statistics of the embedding and content columns

    row = status(conn, "embeddings_internal.target_status(exact => false)")

    assert (row["embedded_rows"], row["cleared_rows"]) == (None, None)
    assert row["total_rows"] == 3000  # the live-row count of the statistics system
    assert row["pending_jobs"] == 700


def test_status_does_not_read_the_watched_table(conn: Conn) -> None:
    watched_docs(conn)
    conn.execute("ANALYZE docs")
    conn.execute("SET embeddings.status_exact_rows = 0")
    before = reads_of(conn, "docs")

    for _ in range(3):
        status(conn)
    after_status = reads_of(conn, "docs")
    status(conn, "embeddings.status_exact")  # the detector works: the exact path does read
    after_exact = reads_of(conn, "docs")

    assert after_status == before
    assert after_exact > after_status


def test_status_does_not_wait_behind_a_lock_on_the_watched_table(conn: Conn, dsn: str) -> None:
    watched_docs(conn)
    conn.execute("ANALYZE docs")
    conn.execute("SET embeddings.status_exact_rows = 0")
    conn.execute("SET lock_timeout = '3s'")
    with psycopg.connect(dsn) as holder:
        holder.execute("LOCK docs IN ACCESS EXCLUSIVE MODE")  # a long ALTER TABLE, say

        row = status(conn)  # would wait for the lock if it read, or even sized, the table
        # the exact path does wait: its lock timeout leaves the counts unknown
        exact = status(conn, "embeddings.status_exact")

    assert row["total_rows"] == 3000
    assert exact["total_rows"] is None


def test_small_tables_are_counted_exactly_by_default(conn: Conn) -> None:
    watched_docs(conn)  # 3000 short rows: well under embeddings_internal.status_exact_rows()

    row = status(conn)

    assert row["estimated"] is False
    assert {name: row[name] for name in ESTIMATED_COUNTS} == exact_counts(conn)


def test_status_exact_counts_what_estimates_have_not_seen(conn: Conn) -> None:
    watched_docs(conn)
    conn.execute("ANALYZE docs")
    conn.execute("ALTER TABLE docs SET (autovacuum_enabled = false)")
    conn.execute("UPDATE docs SET embedding = NULL WHERE id <= 1000")  # after the ANALYZE
    conn.execute("SET embeddings.status_exact_rows = 0")

    estimate, exact = status(conn), status(conn, "embeddings.status_exact")

    assert exact["estimated"] is False
    assert {name: exact[name] for name in ESTIMATED_COUNTS} == exact_counts(conn)
    assert exact["embedded_rows"] == 1000
    assert estimate["embedded_rows"] > 1500  # as of the last ANALYZE: 2000


def test_chunked_targets_estimate_their_chunks(conn: Conn) -> None:
    tiny_model(conn)
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs SELECT i, 'text ' || i FROM generate_series(1, 100) i")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'tiny4', chunk_tokens => 64)")
    conn.execute(
        "INSERT INTO docs_chunks (id, seq, chunk, chunk_hash, embedding)"
        f" SELECT i, s, 'chunk', md5('chunk'), {VECTOR} FROM generate_series(1, 100) i, generate_series(1, 3) s"
    )
    flush_statistics(conn)  # before ANALYZE, which sets the live-row count
    conn.execute("ANALYZE docs")
    conn.execute("ANALYZE docs_chunks")

    row = status(conn, "embeddings_internal.target_status(exact => false)")
    exact = status(conn, "embeddings.status_exact")

    assert (row["total_rows"], row["chunks"], row["estimated"]) == (100, 300, True)
    assert row["embedded_rows"] is None  # documents with chunks: not estimated
    assert (exact["embedded_rows"], exact["chunks"]) == (100, 300)


def run_status(dsn: str, *argv: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, "-m", "worker", "status", "--database-url", dsn, *argv],
        capture_output=True,
        text=True,
        env={**os.environ, "PGOPTIONS": "-c embeddings.status_exact_rows=0"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if "--json" in argv else [{"text": result.stdout}]


@pytest.mark.parametrize("exact", [False, True])
def test_cli_status_exact_flag(conn: Conn, dsn: str, exact: bool) -> None:
    watched_docs(conn)
    conn.execute("ANALYZE docs")
    conn.execute("UPDATE docs SET embedding = NULL WHERE id <= 1000")  # unseen by the statistics

    (row,) = run_status(dsn, "--json", *(["--exact"] if exact else []))
    (text,) = run_status(dsn, *(["--exact"] if exact else []))

    assert row["estimated"] is not exact
    line = next(x for x in text["text"].splitlines() if x.startswith(TARGET))
    if exact:
        assert row["embedded_rows"] == 1000
        assert "~" not in text["text"]
    else:
        assert row["embedded_rows"] > 1500
        assert "~3,000" in line
        assert "status --exact" in text["text"]


def test_pending_counts_each_target_of_a_shared_queue(conn: Conn) -> None:
    tiny_model(conn)
    for table, rows in (("docs", 300), ("notes", 20)):
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, body text)")
        conn.execute(f"SELECT embeddings.watch('{table}', 'body', model => 'tiny4')")
        conn.execute(
            f"INSERT INTO {table} SELECT i, 'text ' || i FROM generate_series(1, %s) i", (rows,)
        )
    # a job in the Supabase guide's shape (one row), and a message no target owns
    conn.execute(
        'SELECT pgmq.send(\'embedding_jobs\', \'{"id": 7, "schema": "public", "table":'
        ' "notes", "contentFunction": "f", "embeddingColumn": "embedding"}\')'
    )
    conn.execute("SELECT pgmq.send('embedding_jobs', '[1, 2]')")

    pending = dict(conn.execute("SELECT target, pending_jobs FROM embeddings.status").fetchall())

    assert pending == {"public.docs.embedding": 300, "public.notes.embedding": 21}


def test_a_running_backfill_of_a_large_table_is_estimated_without_reading_it(conn: Conn) -> None:
    tiny_model(conn)
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text, embedding halfvec(4))")
    conn.execute(
        "INSERT INTO docs (id, body) SELECT i, 'text ' || i FROM generate_series(1, 3000) i"
    )
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'tiny4')")  # queues one step
    flush_statistics(conn)  # before ANALYZE: else the inserts would count twice
    conn.execute("ANALYZE docs")
    conn.execute("SET embeddings.status_exact_rows = 0")
    before = reads_of(conn, "docs")

    row = status(conn)

    assert reads_of(conn, "docs") == before
    queued = conn.execute("SELECT embeddings.backfill_step_keys()").fetchone()
    assert queued is not None
    exact = status(conn, "embeddings.status_exact")
    assert exact["backfill_rows"] == 3000 - queued[0]
    assert abs(row["backfill_rows"] - exact["backfill_rows"]) <= 0.02 * 3000, (row, exact)
    assert abs(row["pending_jobs"] - 3000) <= 0.02 * 3000, row


def test_a_lane_with_many_messages_is_sampled_unless_exact(conn: Conn) -> None:
    tiny_model(conn)
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    docs = conn.execute("SELECT embeddings.watch('docs', 'body', model => 'tiny4')").fetchone()
    conn.execute("SELECT embeddings.watch('notes', 'body', model => 'tiny4')")
    assert docs is not None
    # 600 messages of 5 keys, and 3 single keys in the inbox: more messages than the threshold.
    conn.execute(
        "SELECT embeddings_internal.enqueue_keys(%s, ARRAY(SELECT g FROM generate_series(1, 5) g))"
        " FROM generate_series(1, 600)",
        docs,
    )
    conn.execute("INSERT INTO notes SELECT g, 'text' FROM generate_series(1, 3) g")
    flush_statistics(conn)
    conn.execute("SET embeddings.status_exact_rows = 100")
    rows = conn.execute(
        "SELECT target, pending_live, estimated FROM embeddings.status ORDER BY target"
    ).fetchall()
    # Under 2,000 messages the sample is the whole queue: the estimate is the count.
    assert rows == [(TARGET, 3000, True), ("public.notes.embedding", 3, True)]
    exact = conn.execute(
        "SELECT pending_live, estimated FROM embeddings.status_exact WHERE target = %s",
        (TARGET,),
    ).fetchone()
    assert exact == (3000, False)
    conn.execute("RESET embeddings.status_exact_rows")
    assert status(conn)["estimated"] is False  # 600 messages: counted


def test_a_targets_functions_are_checked_through_the_name_index(conn: Conn) -> None:
    """stopped_targets() (every worker, every few seconds), status and load_targets check each
    target's generated functions (access_problem()). That function's plan is generic, made
    before the target's id is known: a name pattern alone read every function of the database
    for each target (about 10 ms a target beside 4,000 functions, on a 2-core VM). The range of
    names the index finds is read instead. Seen in the plans auto_explain writes of the
    statements run inside the function."""
    watched_docs(conn)
    plans = nested_plans(
        conn, "SELECT embeddings_internal.access_problem(t) FROM embeddings.targets t"
    )
    explained = "\n".join(plans)
    assert "on pg_proc" in explained  # the function's own statement was explained
    # Every read of pg_proc bounded by name: not a sequential scan, nor the whole index read
    # for the schema's functions (the plan this test caught had the latter).
    assert "Seq Scan on pg_proc" not in explained, explained
    assert "Index Cond: (pronamespace =" not in explained, explained
    assert "Index Cond: ((proname >= " in explained, explained


def test_what_stops_the_targets_is_read_in_one_statement_for_every_target(conn: Conn) -> None:
    """Every worker's keeper reads stopped_targets() every 5 s. It was a loop of five statements
    a target, checking each one's problem with a function call that started its executor
    anew (0.24 s beside 1,000 watched tables: 6% of a core of Postgres per idle worker)."""
    for table in ("a", "b", "c"):
        conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, body text)")
        conn.execute(f"SELECT embeddings.watch('{table}', 'body', model => 'all-MiniLM-L6-v2')")
    conn.execute("ALTER TABLE b DROP COLUMN body")  # a problem stops it, as it stopped it before
    conn.execute("SET track_functions = 'all'")
    with conn.transaction():
        stopped = conn.execute(
            "SELECT target, state FROM embeddings_internal.stopped_targets()"
        ).fetchall()
        calls = dict(
            conn.execute(
                "SELECT funcname, calls FROM pg_stat_xact_user_functions"
                " WHERE schemaname = 'embeddings_internal'"
            ).fetchall()
        )
    assert stopped == [("public.b.embedding", "problem")]
    assert calls.get("target_problems") == calls.get("access_problems") == 1, calls
    assert "target_problem" not in calls and "access_problem" not in calls, calls


def test_estimates_find_the_statistics_through_the_catalogs_indexes(conn: Conn) -> None:
    """A large table's counts come from pg_stats, one statement per partition and column. Their
    plans are generic (PL/pgSQL keeps one after five calls; an SQL function plans with its
    arguments unknown): joined to pg_class by oid, pg_stats's own joins read every column of
    that name in the database, or every relation (1.2 ms a call beside 1,000 tables, where
    status took 3.5 s). pg_stats is found by the relation's schema and name instead, each
    through its index."""
    watched_docs(conn)
    conn.execute("ANALYZE docs")
    conn.execute("SET embeddings.status_exact_rows = 0")
    conn.execute("SET plan_cache_mode = force_generic_plan")
    plans = nested_plans(conn, "SELECT * FROM embeddings.status")
    statistics_reads = [plan for plan in plans if "on pg_statistic" in plan]
    row = status(conn)
    assert row["estimated"] is True and row["embedded_rows"] is not None, row
    # both: the content column's blank share, the embedding column's not-NULL share
    assert len(statistics_reads) >= 2, plans
    for plan in statistics_reads:
        # Neither every relation nor every column of that name (the plan of a small catalog).
        assert "Seq Scan on pg_class" not in plan, plan
        assert "Index Cond: (attname =" not in plan, plan
