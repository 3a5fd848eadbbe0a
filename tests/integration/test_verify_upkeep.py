"""The verifying sweep's upkeep (issue 25, leftovers of review): fingerprints of deleted rows
are pruned by the verifying passes themselves (the application's writes pay nothing for it), and
a key whose text depends on session settings (TimeZone, DateStyle, bytea_output...) has one JSON
form whichever session writes, embeds or verifies it, so that no row is queued by every pass."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.support import stores
from tests.support.jobs import clear_queue, queued_keys, verify
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]
RunOnce = Callable[..., Worker]


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
        target = stores.watch_with(app, "events", model=minilm)
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


# --- content evaluated in the same formats in every session --------------------------------


def watched_notes(
    conn: Conn, minilm: str, columns: str, values: str, content: str, defaults: dict[str, str]
) -> int:
    """Table `notes` (`columns`; rows 1-3 of `values`, an expression of i) watched through the
    content function note_text(n), whose SQL is `content`, in a database whose sessions start
    with `defaults`; its target."""
    conn.execute(f"CREATE TABLE notes (id bigint PRIMARY KEY, {columns})")
    conn.execute(f"INSERT INTO notes SELECT i, {values} FROM generate_series(1, 3) i")
    conn.execute(
        "CREATE FUNCTION note_text(n notes) RETURNS text LANGUAGE sql STABLE AS"
        f" $$ SELECT {content} $$"
    )
    name = conn.execute("SELECT current_database()").fetchone()
    assert name is not None
    for setting, value in defaults.items():
        conn.execute(f'ALTER DATABASE "{name[0]}" SET {setting} = {value}')
    return stores.watch_with(conn, "notes", "note_text", model=minilm)


def fingerprinted_from(conn: Conn, target: int, text: str) -> bool:
    """Whether row 1's fingerprint was made from content `text`."""
    return (
        count(
            conn,
            "SELECT count(*) FROM embeddings.fingerprints f JOIN embeddings.targets t"
            " ON t.id = f.target_id WHERE t.id = %s AND f.key = '1'"
            " AND f.fingerprint = md5(embeddings_internal.definition_tag(t, t.model) || md5(%s))",
            target,
            text,
        )
        == 1
    )


def test_content_that_formats_dates_is_embedded_and_verified_alike_in_any_session(
    conn: Conn, dsn: str, minilm: str, run_once: RunOnce
) -> None:
    """A database whose DateStyle and IntervalStyle are not ISO and postgres: the worker, whose
    sessions start with them, still reads what it fetches and embeds every row; and content
    that formats a date, a timestamp and an interval has one text, so one fingerprint, in the
    worker's session and in a verifying sweep's with yet other formats."""
    target = watched_notes(
        conn,
        minilm,
        "body text, day date, at timestamp, took interval",
        "'note ' || i, date '2026-11-20' + i, timestamp '2026-11-23 10:00' + i * interval"
        " '1 hour', i * interval '90 minutes'",
        "n.body || ' on ' || n.day || ', ' || n.at || ', took ' || n.took",
        {"DateStyle": "'German, DMY'", "IntervalStyle": "sql_standard"},
    )

    run_once()

    assert count(conn, "SELECT count(*) FROM notes WHERE embedding IS NULL") == 0
    assert fingerprints(conn, target) == 3
    # The sessions of pg_cron and psql get the database's formats; one may set its own.
    with psycopg.connect(dsn, autocommit=True) as by_default:
        assert by_default.execute("SHOW DateStyle").fetchone() == ("German, DMY",)
        assert complete_pass(by_default, 2) == 0
        # `DateStyle = ISO` as our functions set it keeps the caller's day/month order.
        by_default.execute(
            "CREATE FUNCTION probe() RETURNS text LANGUAGE sql SET DateStyle = ISO"
            " AS $$ SELECT current_setting('DateStyle') $$"
        )
        assert by_default.execute("SELECT probe()").fetchone() == ("ISO, DMY",)
    with psycopg.connect(
        dsn, autocommit=True, options="-c DateStyle=SQL,MDY -c IntervalStyle=iso_8601"
    ) as other:
        assert complete_pass(other, 2) == 0
        assert queued_keys(other, target) == []
    # What was embedded is the ISO text, whichever session evaluates the content.
    with psycopg.connect(dsn, autocommit=True) as by_default:
        by_default.execute("SET DateStyle = ISO")
        by_default.execute("SET IntervalStyle = postgres")
        iso = by_default.execute("SELECT note_text(n) FROM notes n WHERE id = 1").fetchone()
    assert iso == ("note 1 on 2026-11-21, 2026-11-23 11:00:00, took 01:30:00",)
    assert fingerprinted_from(conn, target, iso[0])


def test_content_with_backslashes_in_its_constants_is_embedded_and_verified_alike(
    conn: Conn, dsn: str, minilm: str, run_once: RunOnce
) -> None:
    """A content function whose SQL holds a backslash in a string constant reads it as the
    session's standard_conforming_strings says ('\\t': two characters, or a tab). Content is
    evaluated with it on wherever the worker or a verifying sweep evaluates it, so a database
    whose sessions start with it off (pg_cron's, psql's) verifies what the worker embedded."""
    target = watched_notes(
        conn,
        minilm,
        "body text",
        "'note ' || i",
        "n.body || ' \\t tabbed'",
        {"standard_conforming_strings": "off", "escape_string_warning": "off"},
    )

    run_once()

    assert count(conn, "SELECT count(*) FROM notes WHERE embedding IS NULL") == 0
    for options in ("", "-c standard_conforming_strings=on"):
        with psycopg.connect(dsn, autocommit=True, options=options) as session:
            assert complete_pass(session, 2) == 0, options
            # embeddings.verify() too, called alone (sweep() sets the setting for pgmq).
            queued = 0
            for _ in range(3):
                row = session.execute("SELECT embeddings.verify(2)").fetchone()
                queued += row[0] if row else 0
            assert queued == 0, options
            assert queued_keys(session, target) == [], options
    assert fingerprinted_from(conn, target, "note 1 \\t tabbed")
