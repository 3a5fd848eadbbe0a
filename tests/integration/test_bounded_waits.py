"""Nothing the worker runs waits without bound: another session's lock, or a table owner's code
that runs long, delays only the rows it holds up, never the rest of their batch or another
table's rows (docs/reliability.md, "Bounded waits").

Each test holds something up while a running worker (in-process, not --once) serves a table
that waits and one that does not: the other table's rows, and the waiting table's rows that are
not held up, are embedded while it holds on; the held-up rows once it lets go, with no attempt
spent on a lock wait. tests/security/test_hostile_waits.py plays the same waits as a hostile
tenant and a login without grants, across store kinds, against a real `embed-worker` process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.integration.conftest import Running
from tests.support import stores
from tests.support.process import wait_for

Conn = psycopg.Connection[Any]

# Seconds for rows that nothing holds up to be embedded while something else waits. Before the
# waits were bounded, the worker's writer waited as long as the lock was held: for ever here.
FLOWING = 20
ROWS = 4


def embedded(conn: Conn, store: str, table: str) -> set[int]:
    return {key for key, done in stores.embedded(conn, store, table).items() if done}


def watched(conn: Conn, minilm: str, table: str, store: str = "row", content: str = "body") -> int:
    """`table` (id, body), watched with its vectors in `store`; returns the target id."""
    conn.execute(f"CREATE TABLE {table} (id integer PRIMARY KEY, body text)")
    return stores.watch(conn, store, minilm, table=table, content=content)


def fill(conn: Conn, *tables: str) -> None:
    """ROWS rows in each table, in one transaction (their jobs are leased in one batch)."""
    with conn.transaction():
        for table in tables:
            conn.execute(
                f"INSERT INTO {table} SELECT g, 'row ' || g || ' of {table}'"
                f" FROM generate_series(1, {ROWS}) g"
            )


def wait_embedded(conn: Conn, store: str, table: str, keys: set[int], timeout: float) -> None:
    wait_for(
        lambda: keys <= embedded(conn, store, table),
        timeout=timeout,
        what=f"rows {sorted(keys)} of {table} to be embedded",
    )


def no_attempt_spent(conn: Conn) -> None:
    """Nothing dead-lettered, and no queued job carries an error: waiting was no failure."""
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)
    row = conn.execute(
        "SELECT count(*) FROM pgmq.q_embedding_jobs WHERE message ? 'last_error'"
    ).fetchone()
    assert row == (0,)


@pytest.mark.parametrize("store", ["side", "chunks"])
def test_advisory_locks_of_a_login_without_grants_stall_nothing(
    conn: Conn, dsn: str, minilm: str, running: Callable[..., Running], role: str, store: str
) -> None:
    """Target ids are readable by anyone, and `hashtext(key)` of a guessable key is every
    advisory lock the side and chunk writes took: a login with no grant at all held them, and
    the single writer waited behind them with every other table's rows."""
    target = watched(conn, minilm, "docs", store)
    watched(conn, minilm, "others")
    conn.execute(f"ALTER ROLE {role} LOGIN")
    stranger = psycopg.connect(psycopg.conninfo.make_conninfo(dsn, user=role), autocommit=True)
    with stranger:
        for key in range(1, ROWS + 1):
            stranger.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (target, str(key)))
            stranger.execute("SELECT pg_advisory_lock(%s, %s)", (target, key))
        running()
        fill(conn, "docs", "others")
        wait_embedded(conn, "row", "others", set(range(1, ROWS + 1)), FLOWING)
        wait_embedded(conn, store, "docs", set(range(1, ROWS + 1)), FLOWING)
    no_attempt_spent(conn)


def test_a_row_locked_by_the_application_waits_alone(
    conn: Conn, dsn: str, minilm: str, running: Callable[..., Running]
) -> None:
    """An application transaction holds one watched row: the rest of its batch and the other
    table's rows are written; that row once the lock goes, no attempt spent."""
    watched(conn, minilm, "docs")
    watched(conn, minilm, "others")
    fill(conn, "docs", "others")
    with psycopg.connect(dsn) as application:
        application.execute("SELECT * FROM docs WHERE id = 2 FOR UPDATE")
        running()
        wait_embedded(conn, "row", "others", set(range(1, ROWS + 1)), FLOWING)
        wait_embedded(conn, "row", "docs", {1, 3, 4}, FLOWING)
        assert 2 not in embedded(conn, "row", "docs")
        application.rollback()
        wait_embedded(conn, "row", "docs", {2}, FLOWING)
    no_attempt_spent(conn)


@pytest.mark.parametrize("mode", ["SHARE", "ACCESS EXCLUSIVE"])
def test_a_lock_on_a_watched_table_postpones_only_its_rows(
    conn: Conn, dsn: str, minilm: str, running: Callable[..., Running], mode: str
) -> None:
    """A SHARE lock (a CREATE INDEX that is not CONCURRENTLY) keeps the worker from writing the
    table, an ACCESS EXCLUSIVE one (ALTER TABLE, LOCK TABLE) from reading it too: its rows wait
    for a later batch, while the other table's are embedded."""
    watched(conn, minilm, "docs")
    watched(conn, minilm, "others")
    fill(conn, "docs", "others")
    with psycopg.connect(dsn) as application:
        application.execute(f"LOCK TABLE docs IN {mode} MODE")
        running()
        wait_embedded(conn, "row", "others", set(range(1, ROWS + 1)), FLOWING)
        if mode == "SHARE":  # (ACCESS EXCLUSIVE: the table cannot be read here either)
            assert embedded(conn, "row", "docs") == set()
        application.rollback()
        wait_embedded(conn, "row", "docs", set(range(1, ROWS + 1)), FLOWING)
    no_attempt_spent(conn)


# A row of `sleepers` makes the owner's code sleep for the row it names.
SLEEPERS = "CREATE TABLE sleepers (id integer PRIMARY KEY)"
SLEEP = (
    "IF EXISTS (SELECT FROM sleepers s WHERE s.id = {row}.id) THEN PERFORM pg_sleep(60); END IF;"
)


def test_an_owner_trigger_that_sleeps_fails_only_its_row(
    conn: Conn, minilm: str, running: Callable[..., Running]
) -> None:
    """The table owner's trigger, fired by the worker's vector write, sleeps for one row: the
    statement gives up at its bound, that row fails (an attempt: the owner's code is the
    row's), its neighbours and the other table's rows are written."""
    conn.execute(SLEEPERS)
    watched(conn, minilm, "docs")
    watched(conn, minilm, "others")
    conn.execute(
        "CREATE FUNCTION sleepy() RETURNS trigger LANGUAGE plpgsql AS"
        f" $$ BEGIN {SLEEP.format(row='NEW')} RETURN NULL; END $$"
    )
    conn.execute(
        "CREATE TRIGGER sleepy AFTER UPDATE OF embedding ON docs"
        " FOR EACH ROW EXECUTE FUNCTION sleepy()"
    )
    conn.execute("INSERT INTO sleepers VALUES (2)")
    fill(conn, "docs", "others")
    running(owner_code_timeout_seconds=1.0)
    wait_embedded(conn, "row", "others", set(range(1, ROWS + 1)), FLOWING)
    wait_embedded(conn, "row", "docs", {1, 3, 4}, FLOWING)
    wait_for(
        lambda: conn.execute(
            "SELECT last_error FROM embeddings.failures WHERE row_key = '2'"
        ).fetchone(),
        timeout=FLOWING,
        what="row 2 to be dead-lettered",
    )
    row = conn.execute("SELECT last_error FROM embeddings.failures").fetchone()
    assert row is not None and "EMBED_OWNER_CODE_TIMEOUT_SECONDS" in row[0], row


def watch_docs_by_content_function(conn: Conn, minilm: str, owner_code: str) -> None:
    """docs watched by a PL/pgSQL content function that runs `owner_code` (a template of the
    row's name, `{row}`) before it returns the body."""
    conn.execute(
        "CREATE FUNCTION docs_text(d docs) RETURNS text LANGUAGE plpgsql STABLE AS"
        f" $$ BEGIN {owner_code.format(row='d')} RETURN d.body; END $$"
    )
    stores.watch(conn, "row", minilm, table="docs", content="docs_text")


def test_a_content_function_that_sleeps_fails_only_its_row(
    conn: Conn, minilm: str, running: Callable[..., Running]
) -> None:
    """The table owner's content function sleeps for one row when the worker loads it: the
    load gives up at its bound, that row fails, its neighbours and the other table's rows are
    embedded; once it no longer sleeps, a retried row is embedded."""
    conn.execute(SLEEPERS)
    conn.execute("CREATE TABLE docs (id integer PRIMARY KEY, body text)")
    watch_docs_by_content_function(conn, minilm, SLEEP)
    watched(conn, minilm, "others")
    fill(conn, "docs", "others")
    conn.execute("INSERT INTO sleepers VALUES (2)")
    running(owner_code_timeout_seconds=1.0, max_attempts=100, backoff_base_seconds=1.0)
    assert_only_row_2_waits(
        conn,
        "EMBED_OWNER_CODE_TIMEOUT_SECONDS",
        "row 2's job to be retried with the bound in its error",
    )


def assert_only_row_2_waits(conn: Conn, error: str, what: str) -> None:
    """Every row but docs' row 2 (the one `sleepers` names) is embedded; row 2's job is retried
    with `error` in its last error; once nothing sleeps, row 2 is embedded too."""
    wait_embedded(conn, "row", "others", set(range(1, ROWS + 1)), FLOWING)
    wait_embedded(conn, "row", "docs", {1, 3, 4}, FLOWING)
    wait_for(
        lambda: conn.execute(
            "SELECT 1 FROM pgmq.q_embedding_jobs WHERE message ->> 'last_error' LIKE %s",
            (f"%{error}%",),
        ).fetchone(),
        timeout=FLOWING,
        what=what,
    )
    conn.execute("DELETE FROM sleepers")
    wait_embedded(conn, "row", "docs", {2}, FLOWING)


# Sleeps for the row `sleepers` names, and catches the cancel of its statement's timeout.
STUBBORN = (
    "IF EXISTS (SELECT FROM sleepers s WHERE s.id = {row}.id) THEN LOOP"
    " BEGIN PERFORM pg_sleep(60); EXCEPTION WHEN query_canceled THEN NULL; END;"
    " END LOOP; END IF;"
)


@pytest.mark.parametrize("hook", ["trigger", "content function"])
def test_owner_code_that_catches_the_cancel_ends_its_session_not_the_worker(
    conn: Conn, minilm: str, running: Callable[..., Running], hook: str
) -> None:
    """A statement timeout is a cancel, which PL/pgSQL can catch: the owner's code that does
    and sleeps on would have held the worker for ever. The watchdog ends its session: that
    row fails, the rest of its batch and the other table's rows are embedded."""
    conn.execute(SLEEPERS)
    conn.execute("CREATE TABLE docs (id integer PRIMARY KEY, body text)")
    if hook == "trigger":
        stores.watch(conn, "row", minilm, table="docs")
        conn.execute(
            "CREATE FUNCTION stubborn() RETURNS trigger LANGUAGE plpgsql AS"
            f" $$ BEGIN {STUBBORN.format(row='NEW')} RETURN NULL; END $$"
        )
        conn.execute(
            "CREATE TRIGGER stubborn AFTER UPDATE OF embedding ON docs"
            " FOR EACH ROW EXECUTE FUNCTION stubborn()"
        )
    else:
        watch_docs_by_content_function(conn, minilm, STUBBORN)
    watched(conn, minilm, "others")
    fill(conn, "docs", "others")
    conn.execute("INSERT INTO sleepers VALUES (2)")  # (the triggers' own evaluation ran before)
    running(owner_code_timeout_seconds=1.0, max_attempts=100)
    assert_only_row_2_waits(conn, "caught the cancel", "row 2's job to be retried with why")


def test_our_sessions_bound_every_lock_wait_and_the_owners_statements(dsn: str) -> None:
    """Every reset sets the lock timeout, whatever someone's code set since; in a bounded block,
    a statement that may run someone else's code runs with its statement timeout, local to
    the block's transaction."""
    from worker import db

    def show(conn: Conn, name: str) -> str:
        row = conn.execute(f"SHOW {name}").fetchone()
        assert row is not None
        return str(row[0])

    conn = db.connect(dsn, lock_timeout_ms=250)
    try:
        assert show(conn, "lock_timeout") == "250ms"
        conn.execute("SELECT set_config('lock_timeout', '0', false)")  # as an owner's code would
        assert show(conn, "lock_timeout") == "250ms"
        assert show(conn, "statement_timeout") == "0"
        with db.bounded(conn, 1234):
            assert show(conn, "statement_timeout") == "1234ms"
            conn.execute("SELECT set_config('statement_timeout', '0', false)")
            assert show(conn, "statement_timeout") == "1234ms"
            with pytest.raises(psycopg.errors.QueryCanceled):
                conn.execute("SELECT pg_sleep(5)")
        assert show(conn, "statement_timeout") == "0"
    finally:
        conn.close()
    unbounded = db.connect(dsn, lock_timeout_ms=0)  # 0: as the role and database say
    try:
        assert show(unbounded, "lock_timeout") == "0"
    finally:
        unbounded.close()
