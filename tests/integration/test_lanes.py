"""Priority lanes: which work goes to which queue (SQL only), and a model change of a table with
a composite key (its shadow writes match rows by every key column)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import psycopg

from tests.support.jobs import dead_letters, messages, move_inbox
from tests.support.plans import nested_plans
from worker.models.loaded import LoadedModels
from worker.pipeline.jobs import backfill_queue_name
from worker.pipeline.messages import message_keys
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]


def lane_keys(conn: Conn, queue: str, *, in_order: bool = False) -> list[Any]:
    """The keys queued on `queue`, sorted, or (`in_order`) in the order they were sent."""
    if not queue.endswith("_backfill"):
        move_inbox(conn, queue)  # the triggers' keys, as the worker's read moves them first
    rows = conn.execute(
        psycopg.sql.SQL("SELECT message FROM pgmq.{} ORDER BY msg_id").format(
            psycopg.sql.Identifier(f"q_{queue}")
        )
    ).fetchall()
    keys = [k for (m,) in rows for k in message_keys(m)]
    return keys if in_order else sorted(keys)


def test_each_kind_of_work_goes_to_its_lane(conn: Conn, tiny_models: tuple[str, str]) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs SELECT g, 'existing ' || g FROM generate_series(1, 3) g")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (tiny_models[0],))
    # watch()'s initial enqueue is backfill work; the application's writes are live.
    assert lane_keys(conn, "embedding_jobs_backfill") == [1, 2, 3]
    conn.execute("INSERT INTO docs VALUES (4, 'written by the application')")
    assert lane_keys(conn, "embedding_jobs") == [4]
    assert conn.execute(
        "SELECT pending_jobs, pending_live, pending_backfill FROM embeddings.status"
    ).fetchone() == (4, 1, 3)

    # sweep() counts both lanes as pending and queues what it finds on the backfill lane.
    assert conn.execute("SELECT embeddings.sweep()").fetchone() == (0,)
    conn.execute("SELECT pgmq.purge_queue('embedding_jobs_backfill')")  # jobs lost
    assert conn.execute("SELECT embeddings.sweep()").fetchone() == (3,)
    assert lane_keys(conn, "embedding_jobs_backfill") == [1, 2, 3]
    assert lane_keys(conn, "embedding_jobs") == [4]

    # Push mode: live jobs first, then backfill work, each saying its lane.
    bodies = [r[0] for r in conn.execute("SELECT * FROM embeddings.dispatch_batches(10, 1)")]
    assert len(bodies) == 1
    assert [(message_keys(j), j.get("lane")) for j in bodies[0]] == [
        ([4], None),
        ([1, 2, 3], "backfill"),
    ]

    # A retried dead letter is backfill work too.
    conn.execute("SELECT pgmq.purge_queue('embedding_jobs')")
    conn.execute("SELECT pgmq.purge_queue('embedding_jobs_backfill')")
    dead_letters(conn, [4])
    assert conn.execute("SELECT embeddings.retry_failures()").fetchone() == (1,)
    assert lane_keys(conn, "embedding_jobs_backfill") == [4]
    assert lane_keys(conn, "embedding_jobs") == []


def test_push_mode_hands_back_the_jobs_it_has_no_room_for_in_each_lane(
    conn: Conn, tiny_models: tuple[str, str]
) -> None:
    """dispatch_batches() reads both lanes; what no request has room for is visible again at
    once in its own lane's queue table, its read not counted (one helper names the table)."""
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs SELECT g, 'existing ' || g FROM generate_series(1, 3) g")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (tiny_models[0],))
    for key in (4, 5):  # two live messages (moved together, they would share one)
        conn.execute("INSERT INTO docs VALUES (%s, 'written by the application')", (key,))
        move_inbox(conn)

    bodies = [r[0] for r in conn.execute("SELECT * FROM embeddings.dispatch_batches(1, 1)")]

    assert [[(message_keys(j), j.get("lane")) for j in b] for b in bodies] == [[([4], None)]]
    for table, keys in (
        ("q_embedding_jobs", [[4], [5]]),
        ("q_embedding_jobs_backfill", [[1, 2, 3]]),
    ):
        rows = conn.execute(
            f"SELECT message, read_ct, vt <= clock_timestamp() FROM pgmq.{table} ORDER BY msg_id"
        ).fetchall()
        assert [message_keys(m) for m, _, _ in rows] == keys, table
        left = [(read, visible) for m, read, visible in rows if message_keys(m) != [4]]
        assert left == [(0, True)], (table, left)


def test_retried_dead_letters_go_out_oldest_first_each_queue_made_sure_of_once(
    conn: Conn, tiny_models: tuple[str, str]
) -> None:
    """retry_failures() made sure of a dead letter's queue once per dead letter, which revokes
    pgmq's grants on its tables each time: 100,000 dead letters took 188 s to re-queue. Once a
    queue now, each queue's letters sent together, oldest first; a list of ids as before."""
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (tiny_models[0],))
    conn.execute(
        "INSERT INTO embeddings.failures (target_id, target, row_key, queue, message, attempts,"
        " last_error) SELECT t.id, 'public.docs.embedding', to_jsonb(k), q, jsonb_build_object("
        "'target', t.id, 'keys', jsonb_build_array(k)), 5, 'boom' FROM embeddings.targets t,"
        " generate_series(40, 1, -1) k,"
        " LATERAL (SELECT CASE WHEN k % 4 = 0 THEN 'other_jobs' ELSE 'embedding_jobs' END) l(q)"
    )
    oldest = [k for (k,) in conn.execute("SELECT row_key FROM embeddings.failures ORDER BY id")]
    some = "ARRAY(SELECT id FROM embeddings.failures WHERE (row_key)::int <= 8)"
    conn.execute("SET track_functions = 'all'")
    with conn.transaction():
        assert conn.execute(f"SELECT embeddings.retry_failures({some})").fetchone() == (8,)
        assert conn.execute("SELECT embeddings.retry_failures()").fetchone() == (32,)
        calls = conn.execute(
            "SELECT calls FROM pg_stat_xact_user_functions"
            " WHERE schemaname = 'embeddings_internal' AND funcname = 'ensure_queue'"
        ).fetchone()
    assert calls == (4,)  # two calls, two queues each
    for queue in ("embedding_jobs_backfill", "other_jobs_backfill"):
        sent = lane_keys(conn, queue, in_order=True)
        first = [k for k in oldest if k <= 8 and (k % 4 == 0) == queue.startswith("other")]
        rest = [k for k in oldest if k > 8 and (k % 4 == 0) == queue.startswith("other")]
        assert sent == first + rest
    assert lane_keys(conn, "embedding_jobs") == []


def test_a_retry_of_some_dead_letters_reads_them_by_their_ids(
    conn: Conn, tiny_models: tuple[str, str]
) -> None:
    """`failures --id 42 --retry` and `failures TABLE --retry` re-queue a few dead letters of
    many. The statement kept for any ids (`ids IS NULL OR ...`) read every dead letter for one
    (36 ms among 200,000), and making sure of the queue read all of pg_class twice (8 ms each
    beside 1,000 watched tables; watch() does it too). Seen in the plans, sequential scans
    made as dear as Postgres makes them: the primary key and pg_class's oid index find them."""
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (tiny_models[0],))
    dead_letters(conn, list(range(1, 21)))
    conn.execute("SET enable_seqscan = off")
    plans = nested_plans(
        conn, "SELECT embeddings.retry_failures(ARRAY(SELECT max(id) FROM embeddings.failures))"
    )
    conn.execute("RESET enable_seqscan")

    deletes = [p for p in plans if "Delete on failures" in p]
    grants = [p for p in plans if "aclexplode" in p]
    assert len(deletes) == 1 and "Index Scan using failures_pkey" in deletes[0], deletes
    # (pg_class found by its oid index: not read whole, nor the index read whole and filtered)
    assert grants and all("Index Cond: (oid = ANY" in p for p in grants), grants
    assert lane_keys(conn, "embedding_jobs_backfill") == [20]
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (19,)
    assert conn.execute("SELECT embeddings.retry_failures()").fetchone() == (19,)  # all


def test_unwatch_and_a_queue_move_take_both_lanes(conn: Conn, tiny_models: tuple[str, str]) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs SELECT g, 'existing ' || g FROM generate_series(1, 3) g")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (tiny_models[0],))
    conn.execute("INSERT INTO docs VALUES (4, 'live')")
    conn.execute(
        "SELECT embeddings.watch('docs', 'body', model => %s, queue => 'other_jobs')",
        (tiny_models[0],),
    )
    assert messages(conn) == []
    assert lane_keys(conn, "other_jobs") == [4]
    # The moved backfill jobs, and (as always with watch() again) rows still without a vector,
    # but not row 4, whose live job waits already (the backfill skips queued keys).
    assert set(lane_keys(conn, "other_jobs_backfill")) == {1, 2, 3}
    conn.execute("SELECT embeddings.unwatch('docs')")
    assert lane_keys(conn, "other_jobs") == lane_keys(conn, "other_jobs_backfill") == []


def test_a_chunked_targets_queue_move_takes_both_lanes(
    conn: Conn, tiny_models: tuple[str, str]
) -> None:
    """A chunked target moved to another queue moved its live jobs only: its backfill jobs
    stayed in the old queue's backfill lane, beside the new ones watch() queued there."""
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs SELECT g, 'existing ' || g FROM generate_series(1, 3) g")
    watch = "SELECT embeddings.watch('docs', 'body', model => %s, chunk_tokens => 50{})"
    conn.execute(watch.format(""), (tiny_models[0],))
    conn.execute("INSERT INTO docs VALUES (4, 'live')")
    assert set(lane_keys(conn, "embedding_jobs_backfill")) == {1, 2, 3}
    conn.execute(watch.format(", queue => 'other_jobs'"), (tiny_models[0],))
    assert messages(conn) == [] and lane_keys(conn, "embedding_jobs_backfill") == []
    assert lane_keys(conn, "other_jobs") == [4]
    assert sorted(lane_keys(conn, "other_jobs_backfill")) == [1, 2, 3]


def test_a_model_change_of_a_table_with_a_composite_key(
    conn: Conn,
    tiny_models: tuple[str, str],
    run_once: Callable[..., Worker],
    embedders: LoadedModels,
) -> None:
    old, new = tiny_models
    conn.execute("CREATE TABLE docs (tenant text, id int, body text, PRIMARY KEY (tenant, id))")
    conn.execute(
        "INSERT INTO docs SELECT t, g, t || ' document ' || g"
        " FROM unnest(ARRAY['a', 'b']) t, generate_series(1, 20) g"
    )
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (old,))
    run_once(model=old)
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (new,))
    conn.execute("UPDATE docs SET body = 'edited during the change' WHERE tenant = 'b' AND id = 3")
    run_once(model=old)
    assert conn.execute("SELECT model FROM embeddings.targets").fetchone() == (new,)
    rows = conn.execute("SELECT tenant, id, body, embedding::real[] FROM docs").fetchall()
    assert len(rows) == 40
    expected = embedders.get(new).embed([body for _, _, body, _ in rows])
    for (tenant, key, _, vector), want in zip(rows, expected, strict=True):
        assert vector is not None, (tenant, key)
        assert np.allclose(np.array(vector, dtype=np.float32), want, atol=2e-3), (tenant, key)


def test_the_backfill_lane_is_named_as_the_database_names_it(conn: Conn) -> None:
    """jobqueue.backfill_queue_name (the worker builds its lanes before it connects) is the
    Python twin of embeddings_internal.backfill_queue(): they agree on each side of the length limit."""
    names = ["embedding_jobs", "q", "a" * 37, "b" * 38, "c" * 39, "queue_" + "x" * 41]
    for name in names:
        row = conn.execute("SELECT embeddings_internal.backfill_queue(%s)", (name,)).fetchone()
        assert row is not None
        assert backfill_queue_name(name) == row[0], name
