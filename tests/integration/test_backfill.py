"""watch() on a large table: existing rows are queued by a backfill, a key range per step.

watch() records a cursor and queues at most one step (embeddings.backfill_step_keys() rows)
in its own transaction, whatever the table's size; the worker and sweep() queue the rest
after it committed (sql/62_backfill.sql). Asserted structurally: what is queued and where the
cursor is right after watch(), then that stepping queues every row exactly once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.support import stores
from tests.support.fetch import fetch_value
from tests.support.in_flight import in_process_worker, run_until, run_within, waiting_for_work
from tests.support.jobs import clear_queue, queued_keys
from worker import status as status_model
from worker.cli import status
from worker.config import Settings
from worker.models.loaded import LoadedModels
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]


def step_keys(conn: Conn) -> int:
    row = conn.execute("SELECT embeddings.backfill_step_keys()").fetchone()
    assert row is not None
    return int(row[0])


def backfill(conn: Conn, target_id: int) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT after_key, scanned_rows, enqueued_keys, every_row FROM embeddings.backfills"
        " WHERE target_id = %s",
        (target_id,),
    ).fetchone()
    if row is None:
        return None
    return dict(zip(("after_key", "scanned_rows", "enqueued_keys", "every_row"), row, strict=True))


def step(conn: Conn, target_id: int, max_keys: int) -> tuple[int, int]:
    row = conn.execute(
        "SELECT scanned, enqueued FROM embeddings_internal.backfill_step(%s, %s)",
        (target_id, max_keys),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def step_to_end(conn: Conn, target_id: int, max_keys: int) -> int:
    """Steps until the backfill is gone; returns the number of steps taken."""
    steps = 0
    while backfill(conn, target_id) is not None:
        step(conn, target_id, max_keys)
        steps += 1
        assert steps < 10_000
    return steps


def assert_every_row_queued_once(conn: Conn, target_id: int, max_keys: int, rows: int) -> None:
    """Stepped to the end, the backfill queued rows 1..`rows`, each once and in key order."""
    step_to_end(conn, target_id, max_keys)
    assert queued_keys(conn, target_id) == list(range(1, rows + 1))


def pending_and_backfill(conn: Conn, target_id: int) -> tuple[int, int | None]:
    row = conn.execute(
        "SELECT pending_jobs, backfill_rows FROM embeddings.status WHERE target_id = %s",
        (target_id,),
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def watch(conn: Conn, table: str, **options: Any) -> int:
    return stores.watch_with(conn, table, **{"model": "all-MiniLM-L6-v2", **options})


def make_docs(conn: Conn, rows: int) -> None:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs SELECT i, 'doc ' || i FROM generate_series(1, %s) i", (rows,))


def watched_docs(conn: Conn, rows: int) -> int:
    """`docs` of `rows` rows, watched: the backfill starts; returns the target id."""
    make_docs(conn, rows)
    return watch(conn, "docs")


def test_watch_queues_one_bounded_step_and_leaves_a_cursor(conn: Conn) -> None:
    make_docs(conn, 5000)
    per_step = step_keys(conn)
    target = watch(conn, "docs")
    # Right after watch(): one step's keys queued, the cursor after them, the rest not read.
    assert queued_keys(conn, target) == list(range(1, per_step + 1))
    assert backfill(conn, target) == {
        "after_key": per_step,
        "scanned_rows": per_step,
        "enqueued_keys": per_step,
        "every_row": False,
    }
    # status: rows not queued yet are pending too.
    assert pending_and_backfill(conn, target) == (5000, 5000 - per_step)
    shown = "\n".join(status.render(status_model.fetch(conn)))
    assert f"backfill: {5000 - per_step:,} existing row(s) still to queue" in shown

    assert step(conn, target, 1500) == (1500, 1500)
    assert backfill(conn, target)["after_key"] == per_step + 1500  # type: ignore[index]
    assert_every_row_queued_once(conn, target, 1500, 5000)
    assert pending_and_backfill(conn, target) == (5000, None)
    assert step(conn, target, 1500) == (0, 0)  # finished: nothing more


def test_rows_with_a_vector_or_without_content_are_not_queued(conn: Conn) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text, embedding halfvec(384))")
    conn.execute(
        "INSERT INTO docs SELECT i, CASE WHEN i % 10 = 0 THEN NULL ELSE 'doc ' || i END,"
        " CASE WHEN i % 7 = 0 THEN array_fill(0.1, ARRAY[384])::halfvec END"
        " FROM generate_series(1, 3000) i"
    )
    target = watch(conn, "docs")
    step_to_end(conn, target, 400)
    expected = [i for i in range(1, 3001) if i % 10 and i % 7]
    assert queued_keys(conn, target) == expected


def test_composite_declared_key(conn: Conn) -> None:
    conn.execute(
        "CREATE TABLE pairs (tenant text NOT NULL, n int NOT NULL, body text, UNIQUE (tenant, n))"
    )
    conn.execute(
        "INSERT INTO pairs SELECT t, n, t || n FROM unnest(ARRAY['a', 'b b', 'c''']) t,"
        " generate_series(1, 900) n"
    )
    target = watch(conn, "pairs", key=["tenant", "n"])
    assert backfill(conn, target) is not None
    step_to_end(conn, target, 333)
    keys = queued_keys(conn, target)
    assert len(keys) == 2700
    assert keys == sorted(keys, key=lambda k: (k[0], k[1]))
    assert Counter(map(tuple, keys)) == Counter(
        (t, n) for t in ("a", "b b", "c'") for n in range(1, 901)
    )


def test_partitioned_table(conn: Conn) -> None:
    conn.execute("CREATE TABLE parts (id int PRIMARY KEY, body text) PARTITION BY RANGE (id)")
    for i, (low, high) in enumerate(((0, 1000), (1000, 2000), (2000, 4000))):
        conn.execute(
            f"CREATE TABLE parts_{i} PARTITION OF parts FOR VALUES FROM ({low}) TO ({high})"
        )
    conn.execute("INSERT INTO parts SELECT i, 'doc ' || i FROM generate_series(1, 3500) i")
    target = watch(conn, "parts")
    assert_every_row_queued_once(conn, target, 700, 3500)
    # A partition attached later still queues its rows at once (its own trigger path).
    clear_queue(conn)
    conn.execute("CREATE TABLE parts_3 (id int NOT NULL, body text, embedding halfvec(384))")
    conn.execute("INSERT INTO parts_3 SELECT i, 'doc ' || i FROM generate_series(4000, 4009) i")
    conn.execute("ALTER TABLE parts ATTACH PARTITION parts_3 FOR VALUES FROM (4000) TO (5000)")
    assert sorted(queued_keys(conn, target)) == list(range(4000, 4010))


def test_concurrent_steps_never_queue_a_range_twice(conn: Conn, dsn: str) -> None:
    target = watched_docs(conn, 4000)
    with psycopg.connect(dsn) as first, psycopg.connect(dsn, autocommit=True) as second:
        # The first stepper holds the cursor (its step not committed yet): the second skips it.
        assert step(first, target, 500) == (500, 500)
        assert step(second, target, 500) == (0, 0)
        row = second.execute(
            "SELECT scanned FROM embeddings_internal.backfill_next('embedding_jobs', 500)"
        ).fetchone()
        assert row == (0,)
        first.commit()
        assert step(second, target, 500) == (500, 500)
    step_to_end(conn, target, 900)
    keys = queued_keys(conn, target)
    assert sorted(keys) == list(range(1, 4001))
    assert len(keys) == 4000


def test_a_stepper_killed_mid_step_leaves_the_cursor(conn: Conn, dsn: str) -> None:
    target = watched_docs(conn, 3000)
    before = backfill(conn, target)
    with psycopg.connect(dsn) as doomed:
        assert step(doomed, target, 800) == (800, 800)
        pid = doomed.info.backend_pid
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(psycopg.OperationalError):
            doomed.execute("SELECT 1")
    assert backfill(conn, target) == before
    assert_every_row_queued_once(conn, target, 800, 3000)


def test_rows_written_during_the_backfill(conn: Conn) -> None:
    target = watched_docs(conn, 4000)
    per_step = step_keys(conn)
    # Inserted after watch(): the triggers queue them, the backfill must not again.
    conn.execute("INSERT INTO docs SELECT i, 'new ' || i FROM generate_series(4001, 4100) i")
    # Not yet queued, then deleted: never queued. Updated content: queued once, by the trigger.
    conn.execute("DELETE FROM docs WHERE id BETWEEN 2001 AND 2100")
    conn.execute("INSERT INTO docs VALUES (-5, 'before the cursor'), (2050, NULL)")
    conn.execute("UPDATE docs SET body = 'pending ' || id WHERE id = 2050")
    conn.execute("UPDATE docs SET body = 'changed ' || id WHERE id BETWEEN 3001 AND 3010")
    # Embedded meanwhile (by hand here): not queued by the backfill.
    conn.execute(
        "UPDATE docs SET embedding = array_fill(0.1, ARRAY[384])::halfvec WHERE id BETWEEN 3501 AND 3600"
    )
    step_to_end(conn, target, 450)
    counts = Counter(queued_keys(conn, target))
    assert max(counts.values()) == 1
    expected = (set(range(1, 4101)) - set(range(2001, 2101)) - set(range(3501, 3601))) | {-5, 2050}
    assert set(counts) == expected
    assert per_step < 2001


def test_every_row_again_restarts_from_the_first_key(conn: Conn) -> None:
    target = watched_docs(conn, 2500)
    step(conn, target, 500)
    clear_queue(conn)
    # Another content source re-embeds every row (another model is a blue/green change).
    conn.execute("ALTER TABLE docs ADD COLUMN title text")
    conn.execute("UPDATE docs SET title = body")
    clear_queue(conn)
    conn.execute("SELECT embeddings.watch('docs', 'title', model => 'all-MiniLM-L6-v2')")
    assert backfill(conn, target)["every_row"] is True  # type: ignore[index]
    assert_every_row_queued_once(conn, target, 1000, 2500)


def test_sweep_steps_a_backfill_when_the_queue_is_low(conn: Conn) -> None:
    target = watched_docs(conn, 3000)
    per_step = step_keys(conn)
    # The inline step's jobs still wait: the queue is not low, sweep() leaves the backfill.
    conn.execute("SELECT embeddings.sweep()")
    assert backfill(conn, target)["after_key"] == per_step  # type: ignore[index]
    clear_queue(conn)  # (as if a worker had done them)
    row = conn.execute("SELECT embeddings.sweep()").fetchone()
    assert row == (per_step,)
    assert backfill(conn, target)["after_key"] == 2 * per_step  # type: ignore[index]


def test_the_worker_steps_only_while_the_backfill_lane_is_low(conn: Conn) -> None:
    make_docs(conn, 5000)
    target = watch(conn, "docs")  # its inline step fills the lane with a step's worth
    step_query = (
        "SELECT scanned, enqueued FROM embeddings_internal.backfill_next('embedding_jobs', 700)"
    )
    assert conn.execute(step_query).fetchone() == (0, 0)
    clear_queue(conn)  # (as if a worker had done them)
    assert conn.execute(step_query).fetchone() == (700, 700)
    assert len(queued_keys(conn, target)) == 700


def test_a_worker_role_steps_backfills(conn: Conn) -> None:
    target = watched_docs(conn, 2500)
    clear_queue(conn)  # the inline step's jobs, done: the lane is low
    conn.execute("CREATE ROLE backfill_worker")
    conn.execute("SELECT embeddings.grant_worker('backfill_worker')")
    conn.execute("SET ROLE backfill_worker")
    row = conn.execute(
        "SELECT scanned, enqueued FROM embeddings_internal.backfill_next('embedding_jobs', 700)"
    ).fetchone()
    conn.execute("RESET ROLE")
    assert row == (700, 700)
    assert len(queued_keys(conn, target)) == 700


def test_the_worker_embeds_every_row_once(
    conn: Conn, run_once: Callable[..., Worker], tiny_models: tuple[str, str]
) -> None:
    make_docs(conn, 2600)
    conn.execute("CREATE TABLE writes (id bigint)")
    conn.execute(
        "CREATE FUNCTION log_write() RETURNS trigger LANGUAGE plpgsql AS"
        " $$BEGIN INSERT INTO writes VALUES (new.id); RETURN NULL; END$$"
    )
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (tiny_models[0],))
    conn.execute(
        "CREATE TRIGGER log_write AFTER UPDATE OF embedding ON docs FOR EACH ROW"
        " WHEN (new.embedding IS NOT NULL) EXECUTE FUNCTION log_write()"
    )
    # Small steps (batch 16: 256 rows a step): the worker takes several.
    run_once(model=tiny_models[0], batch_size=16)
    assert conn.execute("SELECT count(*) FROM embeddings.backfills").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM docs WHERE embedding IS NULL").fetchone() == (0,)
    writes = conn.execute(
        "SELECT id, count(*) FROM writes GROUP BY id HAVING count(*) > 1"
    ).fetchall()
    assert writes == []
    assert conn.execute("SELECT count(DISTINCT id) FROM writes").fetchone() == (2600,)


def test_run_once_waits_for_a_backfill_another_worker_is_stepping(
    conn: Conn, dsn: str, settings: Settings, embedders: LoadedModels, tiny_models: tuple[str, str]
) -> None:
    """Two `run --once` workers over one backfill: when the lane runs dry both step it, and the
    step of the first holds the cursor until it commits. The second's step skipped it, its read
    found nothing, and it exited drained as it saw it, its share of the backfill undone."""
    target = watched_docs_with(conn, 1500, tiny_models[0])  # watch() queued 1,000; 500 wait
    worker = in_process_worker(settings, embedders, once=True, model=tiny_models[0])
    with psycopg.connect(dsn) as other:  # the other worker, mid-step
        other.execute("SELECT FROM embeddings.backfills WHERE target_id = %s FOR UPDATE", (target,))

        def step_and_commit() -> None:
            assert step(other, target, 1000) == (500, 500)
            other.commit()

        def drained() -> bool:
            """Done with the rows watch() queued, and waiting."""
            embedded = fetch_value(conn, "SELECT count(embedding) FROM docs")
            return embedded == 1000 and waiting_for_work(conn)

        exits = run_until(worker, drained, then=step_and_commit)
    assert exits == [0]
    assert fetch_value(conn, "SELECT count(*) FROM docs WHERE embedding IS NULL") == 0


def test_run_once_leaves_a_backfill_no_one_moves(
    conn: Conn,
    dsn: str,
    settings: Settings,
    embedders: LoadedModels,
    tiny_models: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A backfill's cursor row held and not stepped (a transaction left open on it): `--once`
    waits for it a bounded time (five of its steps' bounds), then ends, the rest left queued
    for a worker that runs on."""
    target = watched_docs_with(conn, 1500, tiny_models[0])
    worker = in_process_worker(
        settings, embedders, once=True, model=tiny_models[0], owner_code_timeout_seconds=0.2
    )
    with psycopg.connect(dsn) as other:
        other.execute("SELECT FROM embeddings.backfills WHERE target_id = %s FOR UPDATE", (target,))
        assert run_within(worker, 60) == [0]
    assert fetch_value(conn, "SELECT count(*) FROM docs WHERE embedding IS NULL") == 500
    assert backfill(conn, target) is not None
    assert "backfill of queue embedding_jobs not moved for 1 s" in caplog.text


def watched_docs_with(conn: Conn, rows: int, model: str) -> int:
    make_docs(conn, rows)
    return watch(conn, "docs", model=model)
