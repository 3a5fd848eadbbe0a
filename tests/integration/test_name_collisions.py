"""A user's objects named like ours: triggers named embeddings_<id>_<kind> that call the user's
own functions (ours are ours by their function, sql/30_triggers.sql: stray_triggers()),
and queues named like a backfill lane (sql/40_watch.sql)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.support.fetch import fetch_value
from worker import exceptions
from worker.retrieval.targets import find_target, table_targets

Conn = psycopg.Connection[Any]


@pytest.fixture
def audit(conn: Conn) -> str:
    """A user's trigger function, public.my_audit()."""
    conn.execute(
        "CREATE FUNCTION public.my_audit() RETURNS trigger LANGUAGE plpgsql"
        " AS $$ BEGIN RETURN NULL; END $$"
    )
    return "public.my_audit()"


def triggers(conn: Conn, table: str) -> set[str]:
    return {
        row[0]
        for row in conn.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal",
            (table,),
        ).fetchall()
    }


def table(conn: Conn, name: str) -> None:
    conn.execute(f"CREATE TABLE {name} (id bigint PRIMARY KEY, body text)")


def test_watch_leaves_a_user_trigger_named_like_another_target_s(conn: Conn, audit: str) -> None:
    """watch() dropped it, saying it called the code of target 19."""
    table(conn, "docs")
    conn.execute(
        f"CREATE TRIGGER embeddings_19_insert AFTER INSERT ON docs EXECUTE FUNCTION {audit}"
    )
    conn.execute("SELECT embeddings.watch('docs', 'body')")
    assert "embeddings_19_insert" in triggers(conn, "docs")
    strays = "SELECT count(*) FROM embeddings_internal.stray_triggers()"
    assert fetch_value(conn, strays) == 0


def test_unwatch_leaves_a_user_trigger_of_its_name_on_another_table(conn: Conn, audit: str) -> None:
    """unwatch() of target 41's table dropped embeddings_41_update from an unrelated table."""
    table(conn, "docs")
    target = fetch_value(conn, "SELECT embeddings.watch('docs', 'body')")
    table(conn, "other")
    conn.execute(
        f"CREATE TRIGGER embeddings_{target}_update AFTER UPDATE ON other EXECUTE FUNCTION {audit}"
    )
    conn.execute("SELECT embeddings.unwatch('docs')")
    assert triggers(conn, "other") == {f"embeddings_{target}_update"}
    assert not [t for t in triggers(conn, "docs") if t.startswith("embeddings_")]


def test_a_user_trigger_holding_the_name_of_ours_is_refused_clearly(conn: Conn, audit: str) -> None:
    """It was taken for ours: the table's inserts went unqueued."""
    table(conn, "docs")
    target = fetch_value(conn, "SELECT embeddings.watch('docs', 'body', triggers => false)")
    conn.execute(
        f"CREATE TRIGGER embeddings_{target}_insert AFTER INSERT ON docs EXECUTE FUNCTION {audit}"
    )
    with pytest.raises(psycopg.errors.DuplicateObject) as caught:
        conn.execute("SELECT embeddings.watch('docs', 'body', triggers => true)")
    assert f"trigger embeddings_{target}_insert on public.docs is not embed-worker's" in str(
        caught.value
    )
    assert "it calls public.my_audit()" in str(caught.value)
    assert "ALTER TRIGGER" in (caught.value.diag.message_hint or "")


@pytest.mark.parametrize("queue", ["embedding_jobs_backfill", "lane_backfill"])
def test_a_queue_named_like_a_backfill_lane_is_refused_up_front(conn: Conn, queue: str) -> None:
    """embedding_jobs_backfill failed deep inside (`pgmq.q_embedding_jobs_backfill_backfill`
    does not exist); lane_backfill beside a queue `lane` made one pgmq queue both a live queue
    and a lane."""
    table(conn, "docs")
    with pytest.raises(psycopg.errors.InvalidParameterValue) as caught:
        conn.execute("SELECT embeddings.watch('docs', 'body', queue => %s)", (queue,))
    assert f'invalid queue name "{queue}": a name ending in _backfill' in str(caught.value)
    assert caught.value.diag.context is None or caught.value.diag.context.count("\n") < 3


def test_a_table_name_past_63_bytes_is_refused_where_we_read_it(conn: Conn) -> None:
    """`search`, `status`, `failures` and POST /search named the table of 63 b's when given 70:
    Postgres cuts a name part past 63 bytes when it reads it as a table's. We read their text
    first (a regclass argument, watch()'s `source`, Postgres reads before we see it)."""
    table(conn, "b" * 63)
    conn.execute("SELECT embeddings.watch(%s, 'body')", ("b" * 63,))
    for given in ("b" * 70, "public." + "b" * 70, f'"{"é" * 32}"'):
        with pytest.raises(exceptions.TargetError) as found:
            find_target(conn, given)
        assert "bytes, over Postgres' 63 (max_identifier_length)" in str(found.value)
        with pytest.raises(exceptions.ConfigError) as listed:
            table_targets(conn, given)
        assert "bytes, over Postgres' 63" in str(listed.value)
    assert find_target(conn, "b" * 63).qualified_name == "public." + "b" * 63 + ".embedding"
