"""The verifying sweep's upkeep (issue 25, leftovers of review): fingerprints of deleted rows
are pruned by the verifying passes themselves (the application's writes pay nothing for it), and
a key whose text depends on session settings (TimeZone, DateStyle, bytea_output...) has one JSON
form whichever session writes, embeds or verifies it, so that no row is queued by every pass."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.support.jobs import clear_queue, queued_keys
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]
RunOnce = Callable[..., Worker]


def verify(conn: Conn, max_rows: int = 1000) -> int:
    row = conn.execute(
        "SELECT embeddings.sweep(max_rows => %s, verify => true)", (max_rows,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def count(conn: Conn, query: str, *params: Any) -> int:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def fingerprints(conn: Conn, target: int) -> int:
    return count(conn, "SELECT count(*) FROM embeddings.fingerprints WHERE target_id = %s", target)


def complete_pass(conn: Conn, max_rows: int) -> int:
    """Verifying slices until a pass ends (its cursor back at the start); the rows queued."""
    queued = verify(conn, max_rows)
    while conn.execute(
        "SELECT after_key IS NOT NULL FROM embeddings.verify_cursors"
    ).fetchone() == (True,):
        queued += verify(conn, max_rows)
    return queued


# --- fingerprints of deleted rows -----------------------------------------------------------


@pytest.mark.parametrize("store", ["plain", "chunked", "side"])
def test_fingerprints_of_deleted_rows_are_pruned_by_the_verifying_passes(
    conn: Conn, minilm: str, run_once: RunOnce, store: str
) -> None:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs SELECT i, 'document number ' || i FROM generate_series(1, 40) i")
    extra = {"plain": "", "chunked": ", chunk_tokens => 64", "side": ", store => 'side'"}[store]
    row = conn.execute(
        f"SELECT embeddings.watch('docs', 'body', model => %s{extra})", (minilm,)
    ).fetchone()
    assert row is not None
    target = int(row[0])
    run_once()
    assert fingerprints(conn, target) == 40
    conn.execute("DELETE FROM docs WHERE id % 3 = 0")  # 13 rows gone
    run_once()  # side and chunk tables: the worker follows the deletes
    clear_queue(conn)
    # Bounded slices (7 rows, 7 fingerprints each): two complete passes at most.
    assert complete_pass(conn, 7) == 0
    assert complete_pass(conn, 7) == 0
    assert fingerprints(conn, target) == 27 == count(conn, "SELECT count(*) FROM docs")
    verified = conn.execute(
        "SELECT verified_rows, queued_by_last_pass FROM embeddings.verification"
        " WHERE target_id = %s",
        (target,),
    ).fetchone()
    assert verified == (27, 0)  # status's "verified" figures count live rows only


def test_a_row_inserted_again_under_a_deleted_key_is_still_verified(
    conn: Conn, minilm: str, run_once: RunOnce
) -> None:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs SELECT i, 'document number ' || i FROM generate_series(1, 10) i")
    row = conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (minilm,)).fetchone()
    assert row is not None
    target = int(row[0])
    run_once()
    # Row 4 goes, and comes back (a restore, say) with other content, yet its old vector, and no
    # job: before and after its fingerprint was pruned, the pass finds it.
    conn.execute("DELETE FROM docs WHERE id IN (4, 5)")
    conn.execute("ALTER TABLE docs DISABLE TRIGGER USER")
    conn.execute(
        "INSERT INTO docs SELECT 4, 'something else entirely', embedding FROM docs WHERE id = 3"
    )
    conn.execute("ALTER TABLE docs ENABLE TRIGGER USER")
    assert complete_pass(conn, 3) == 1
    assert queued_keys(conn, target) == [4]
    clear_queue(conn)
    assert complete_pass(conn, 3) == 1  # queued again: nothing pruned its evidence away
    run_once()
    assert complete_pass(conn, 3) == 0
    assert fingerprints(conn, target) == 9
    # Row 5 comes back with no vector: its job embeds it and it verifies.
    conn.execute("INSERT INTO docs VALUES (5, 'back again')")
    run_once()
    assert complete_pass(conn, 3) == 0
    assert fingerprints(conn, target) == 10


# --- keys whose text depends on session settings --------------------------------------------

APP = "-c TimeZone=Asia/Kathmandu -c DateStyle=SQL,DMY -c bytea_output=escape"
SWEEPER = "-c TimeZone=America/St_Johns -c DateStyle=German -c bytea_output=hex"

KEYS = {
    "timestamptz": ("timestamptz", "timestamptz '2026-03-29 02:30:00+00' + i * interval '7 hours'"),
    "timestamptz[]": (
        "timestamptz[]",
        "ARRAY[timestamptz '2026-01-01 00:00:00+00' + i * interval '1 day', 'infinity']",
    ),
    "bytea": ("bytea", "convert_to('key ' || i || E'\\001', 'UTF8')"),
    "tstzrange": (
        "tstzrange",
        "tstzrange(timestamptz '2020-01-01 00:00+00' + i * interval '1 hour', NULL)",
    ),
}


@pytest.mark.parametrize("key", sorted(KEYS))
def test_keys_are_verified_alike_in_sessions_with_other_settings(
    conn: Conn, dsn: str, minilm: str, run_once: RunOnce, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    sql_type, expr = KEYS[key]
    conn.execute(f"CREATE TABLE events (k {sql_type} PRIMARY KEY, body text)")
    with psycopg.connect(dsn, autocommit=True, options=APP) as app:
        app.execute(f"INSERT INTO events SELECT {expr}, 'event ' || i FROM generate_series(1, 3) i")
        row = app.execute(
            "SELECT embeddings.watch('events', 'body', model => %s)", (minilm,)
        ).fetchone()
        assert row is not None
        target = int(row[0])
        # rows queued by the triggers, in the application's session
        app.execute(f"INSERT INTO events SELECT {expr}, 'event ' || i FROM generate_series(4, 6) i")
        app.execute("UPDATE events SET body = body || ' (edited)' WHERE body = 'event 5'")
    # The worker's session has the application's TimeZone (PGTZ).
    monkeypatch.setenv("PGTZ", "Asia/Kathmandu")
    run_once()
    monkeypatch.delenv("PGTZ")
    assert count(conn, "SELECT count(*) FROM events WHERE embedding IS NULL") == 0
    assert fingerprints(conn, target) == 6
    with psycopg.connect(dsn, autocommit=True, options=SWEEPER) as sweeper:
        assert complete_pass(sweeper, 4) == 0
        assert queued_keys(sweeper, target) == []
        assert complete_pass(sweeper, 4) == 0  # and pruning keeps every fingerprint
    assert fingerprints(conn, target) == 6
    # A row changed unseen is still found, from any session, and its key still round-trips.
    with psycopg.connect(dsn, autocommit=True, options=SWEEPER) as sweeper:
        sweeper.execute("SET session_replication_role = replica")
        sweeper.execute("UPDATE events SET body = 'changed unseen' WHERE body = 'event 2'")
        sweeper.execute("RESET session_replication_role")
        assert complete_pass(sweeper, 4) == 1
    run_once()
    with psycopg.connect(dsn, autocommit=True, options=APP) as app:
        assert complete_pass(app, 4) == 0
    assert count(conn, "SELECT count(*) FROM events WHERE embedding IS NULL") == 0
