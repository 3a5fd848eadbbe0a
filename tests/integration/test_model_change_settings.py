"""The documented one-line model change (`watch(table, content, model => ...)`) changes the model
only, whatever settings the target was watched with: a setting not given means "as it is" for
a watched table (sql/40_watch.sql), and a setting given that differs is named in the refusal.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.integration.test_model_change import in_change, models

Conn = psycopg.Connection[Any]

__all__ = ["models"]  # the fixture, used by name


def settings(conn: Conn) -> tuple[str, bool]:
    row = conn.execute("SELECT queue, clear_on_update FROM embeddings.targets").fetchone()
    assert row is not None
    return row[0], row[1]


def test_a_model_change_of_a_target_on_another_queue_and_without_clearing(
    conn: Conn, models: tuple[str, str, str]
) -> None:
    old, new, wide = models
    conn.execute("CREATE TABLE rt (id bigint PRIMARY KEY, body text)")
    conn.execute("INSERT INTO rt VALUES (1, 'one'), (2, 'two')")
    conn.execute(
        "SELECT embeddings.watch('rt', 'body', model => %s, queue => 'q2',"
        " clear_on_update => false)",
        (old,),
    )
    conn.execute("SELECT embeddings.watch('rt', 'body', model => %s)", (new,))
    assert in_change(conn)
    assert settings(conn) == ("q2", False)

    # A setting given that differs is refused, by name, with both values.
    with pytest.raises(psycopg.errors.FeatureNotSupported) as refused:
        conn.execute(
            "SELECT embeddings.watch('rt', 'body', model => %s, queue => 'q3',"
            " clear_on_update => true)",
            (wide,),
        )
    message = str(refused.value)
    assert "queue (q2, given q3)" in message
    assert "clear_on_update (false, given true)" in message
    # Given as they are, they are no change.
    conn.execute(
        "SELECT embeddings.watch('rt', 'body', model => %s, queue => 'q2',"
        " clear_on_update => false)",
        (wide,),
    )
    row = conn.execute("SELECT model FROM embeddings.model_changes").fetchone()
    assert row == (wide,)

    # Watched again with its model (the change cancelled), settings left out: as they are.
    conn.execute("SELECT embeddings.watch('rt', 'body', model => %s)", (old,))
    assert not in_change(conn)
    assert settings(conn) == ("q2", False)
    conn.execute("SELECT embeddings.watch('rt', 'body')")
    assert settings(conn) == ("q2", False)


def test_a_new_target_gets_the_default_queue_and_clears_on_update(
    conn: Conn, models: tuple[str, str, str]
) -> None:
    conn.execute("CREATE TABLE rt (id bigint PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('rt', 'body', model => %s)", (models[0],))
    assert settings(conn) == ("embedding_jobs", True)


def watched_as(conn: Conn) -> tuple[bool, bool, list[str], int]:
    """The target's triggers and replica settings, its key, and the triggers on its table."""
    row = conn.execute(
        "SELECT has_triggers, replica, key_columns::text[],"
        " (SELECT count(*) FROM pg_trigger g WHERE g.tgrelid = t.source AND NOT g.tgisinternal)"
        " FROM embeddings.targets t"
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2], row[3]


def test_a_model_change_of_a_target_without_triggers_replicated_and_of_another_key(
    conn: Conn, models: tuple[str, str, str]
) -> None:
    """triggers, replica and key not given keep the target's: the one-line change was refused
    ("triggers (false, given true); replica (true, given false); key (id, given code)"), and a
    watch() again with the target's own model re-registered it with triggers installed, not
    replicated, keyed by the primary key, without a word."""
    old, new, wide = models
    conn.execute("CREATE TABLE rt (id bigint PRIMARY KEY, code text NOT NULL UNIQUE, body text)")
    conn.execute("INSERT INTO rt VALUES (1, 'a', 'one'), (2, 'b', 'two')")
    conn.execute(
        "SELECT embeddings.watch('rt', 'body', model => %s, triggers => false, replica => true,"
        " key => ARRAY['code'])",
        (old,),
    )
    kept = (False, True, ["code"], 0)
    assert watched_as(conn) == kept
    conn.execute("SELECT embeddings.watch('rt', 'body', model => %s)", (new,))
    assert in_change(conn)
    assert watched_as(conn) == kept

    # A setting given that differs is refused, by name, with both values.
    with pytest.raises(psycopg.errors.FeatureNotSupported) as refused:
        conn.execute(
            "SELECT embeddings.watch('rt', 'body', model => %s, triggers => true,"
            " replica => false, key => ARRAY['id'])",
            (wide,),
        )
    message = str(refused.value)
    assert "triggers (false, given true)" in message
    assert "replica (true, given false)" in message
    assert "key (code, given id)" in message

    # Watched again with its model (the change cancelled), settings left out: as they are.
    conn.execute("SELECT embeddings.watch('rt', 'body', model => %s)", (old,))
    assert not in_change(conn)
    assert watched_as(conn) == kept
    conn.execute("SELECT embeddings.watch('rt', 'body')")
    assert watched_as(conn) == kept
    # Given, they change (no model change at the same time).
    conn.execute("SELECT embeddings.watch('rt', 'body', triggers => true, replica => false)")
    assert watched_as(conn)[:3] == (True, False, ["code"]) and watched_as(conn)[3] > 0


def test_a_new_target_gets_triggers_no_replica_and_its_primary_key(
    conn: Conn, models: tuple[str, str, str]
) -> None:
    conn.execute("CREATE TABLE rt (id bigint PRIMARY KEY, code text NOT NULL UNIQUE, body text)")
    conn.execute("SELECT embeddings.watch('rt', 'body', model => %s)", (models[0],))
    has_triggers, replica, key, triggers = watched_as(conn)
    assert (has_triggers, replica, key) == (True, False, ["id"]) and triggers > 0
