"""A database whose sessions start with settings that change how SQL text reads: our functions
and the worker work in it as in any other.

- standard_conforming_strings off (backslashes in plain string constants are escapes): pgmq's
  own functions (pgmq.format_table_name's '\\'') no longer parse, so every function of ours
  that calls pgmq sets it on for the call, and our sessions set it (session_reset); our own
  constants read the same either way (tests/unit/test_escape_literals.py).
- quote_all_identifiers on: %I quotes every name, so a generated trigger's name is quoted whole
  (watch() had made `"embeddings_1"_insert`, a syntax error).
- and settings that change how values read and print (German dates, SQL-standard intervals, a
  time zone 12:45 ahead, 2 float digits, bytea as escapes, `= NULL` as IS NULL, an empty path).
Set as the database's defaults (ALTER DATABASE ... SET), so that every new session has them:
the application's that watches and writes, the worker's, the search pool's, pg_cron's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.integration.conftest import register_tiny_models
from tests.support.process import run_cli
from worker import db, exceptions, schema
from worker.cli import doctor
from worker.config import Settings
from worker.models.query_batch import QueryBatchers
from worker.process.runner import Worker
from worker.retrieval.pool import SearchConnections
from worker.retrieval.request import SearchRequest
from worker.retrieval.search import SearchService

Conn = psycopg.Connection[Any]

ODD_DEFAULTS = {
    "standard_conforming_strings": "off",
    "escape_string_warning": "off",
    "quote_all_identifiers": "on",
    "DateStyle": "'German, DMY'",
    "IntervalStyle": "sql_standard",
    "TimeZone": "'Pacific/Chatham'",
    "extra_float_digits": "-15",
    "bytea_output": "escape",
    "transform_null_equals": "on",
    "search_path": "''",
}
BODIES = ["a path C:\\docs\\notes", "the os.path module", "it's a \\n newline"] * 4


def test_a_database_with_odd_session_defaults_is_watched_embedded_and_searched(
    conn: Conn,
    dsn: str,
    embedders: Any,
    run_once: Callable[..., Worker],
    tiny_models: tuple[str, str],
) -> None:
    database = conn.info.dbname
    for name, value in ODD_DEFAULTS.items():
        conn.execute(f'ALTER DATABASE "{database}" SET {name} = {value}')
    with psycopg.connect(dsn, autocommit=True) as app:  # the application's session
        assert app.execute("SHOW standard_conforming_strings").fetchone() == ("off",)
        app.execute("CREATE TABLE public.docs (id int PRIMARY KEY, body text)")
        app.execute(
            "SELECT embeddings.watch('public.docs', 'body', model => %s)", (tiny_models[0],)
        )
        app.execute("SELECT embeddings.enable_fts('public.docs', 'english')")
        with app.cursor() as cur:
            cur.executemany(
                "INSERT INTO public.docs VALUES (%s, %s)", list(enumerate(BODIES, start=1))
            )
        app.execute("UPDATE public.docs SET body = body || ' (edited)' WHERE id = 1")
        assert app.execute("SELECT count(*) FROM embeddings.status").fetchone() == (1,)

    run_once(model=tiny_models[0])

    with psycopg.connect(dsn, autocommit=True) as app:
        assert app.execute(
            "SELECT count(*) FROM public.docs WHERE embedding IS NULL"
        ).fetchone() == (0,)
        row = app.execute("SELECT pending_jobs, failed_jobs FROM embeddings.status").fetchone()
        assert row == (0, 0)
        assert app.execute("SELECT count(*) FROM embeddings.sweep()").fetchone() is not None
    searches = SearchConnections(dsn, max_size=1)
    service = SearchService(searches.connection, QueryBatchers(embedders.get))
    try:
        for mode in ("vector", "hybrid"):
            request = SearchRequest.parse(
                {"table": "public.docs", "query": "os.path module", "k": 3, "mode": mode}
            )
            assert len(service.search(request)) == 3, mode
    finally:
        searches.close()


def test_our_transactions_run_at_read_committed_whatever_the_database_s_default(
    conn: Conn, dsn: str
) -> None:
    """`default_transaction_isolation = 'serializable'` is a common database default. At it,
    two workers and an application writing at once failed most of the workers' batches (a
    vector's write, the queue's delete, the inbox's move: could not serialize access), spent
    the rows' attempts, and stopped a worker; every statement of ours is written for READ
    COMMITTED, where a row written meanwhile is re-checked (queries.sql: session_reset)."""
    database = conn.info.dbname
    conn.execute(f'ALTER DATABASE "{database}" SET default_transaction_isolation = serializable')
    with psycopg.connect(dsn, autocommit=True) as app:  # the application's sessions: as set
        assert app.execute("SHOW default_transaction_isolation").fetchone() == ("serializable",)
    worker_session = db.connect(dsn)
    searches = SearchConnections(dsn, max_size=1)
    try:
        with searches.connection() as pooled:
            for session in (worker_session, pooled):
                with session.transaction():
                    level = session.execute("SHOW transaction_isolation").fetchone()
                assert level == ("read committed",)
                # Behind a transaction pooler, a server session that no reset of ours set up:
                # our transactions say their level themselves.
                psycopg.Cursor(session).execute("SET default_transaction_isolation = serializable")
                with session.transaction():
                    level = session.execute("SHOW transaction_isolation").fetchone()
                assert level == ("read committed",)
    finally:
        searches.close()
        worker_session.close()


def test_a_database_whose_encoding_is_sql_ascii_is_refused_plainly(conn: Conn, dsn: str) -> None:
    """initdb in a C locale without --encoding makes SQL_ASCII databases. `migrate` failed there
    with "cannot use a string pattern on a bytes-like object" (psycopg returns such a
    database's text as bytes); every command says what is wrong now, and exits 2."""
    name = f"{conn.info.dbname}_ascii"
    conn.execute(f'CREATE DATABASE "{name}" ENCODING SQL_ASCII LOCALE "C" TEMPLATE template0')
    try:
        ascii_dsn = psycopg.conninfo.make_conninfo(dsn, dbname=name)
        with pytest.raises(exceptions.ConfigError, match="SQL_ASCII"):
            db.connect(ascii_dsn)
        done = run_cli("migrate", env={"DATABASE_URL": ascii_dsn}, timeout=120)
        assert done.returncode == 2, done.stderr
        assert "ENCODING 'UTF8'" in done.stderr and "Traceback" not in done.stderr
        # QA clinits 6: doctor's fix line was the generic one for a server it cannot reach
        (found,) = doctor.check(ascii_dsn, Settings(database_url=ascii_dsn))
        assert found.level == "FAIL" and "SQL_ASCII" in found.detail
        assert found.fix.startswith("make a database with ENCODING 'UTF8'"), found.fix
        assert "accepts connections" not in found.fix
    finally:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_migrate_runs_at_read_committed_whatever_the_database_s_default(empty_dsn: str) -> None:
    """`migrate` runs beside workers and applications; its statements, like ours everywhere,
    are written for READ COMMITTED. It ran at the database's default (serializable here), where
    a write beside it could fail the migration with a serialization failure. Each DDL of the
    install records the isolation it ran at (an event trigger of the test's)."""
    with psycopg.connect(empty_dsn, autocommit=True) as su:
        database = su.info.dbname
        su.execute(f'ALTER DATABASE "{database}" SET default_transaction_isolation = serializable')
        su.execute("CREATE TABLE public.isolation_seen (level text)")
        su.execute(
            "CREATE FUNCTION public.note_isolation() RETURNS event_trigger LANGUAGE plpgsql AS"
            " $$ BEGIN INSERT INTO public.isolation_seen"
            " VALUES (current_setting('transaction_isolation')); END $$"
        )
        su.execute(
            "CREATE EVENT TRIGGER note_isolation ON ddl_command_end"
            " EXECUTE FUNCTION public.note_isolation()"
        )
    schema.migrate(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as su:
        seen = su.execute("SELECT level, count(*) FROM public.isolation_seen GROUP BY 1").fetchall()
        su.execute("DROP EVENT TRIGGER note_isolation")
    assert [level for level, _ in seen] == ["read committed"], seen


def test_a_command_past_its_statement_timeout_says_how_to_give_it_longer(
    conn: Conn, dsn: str
) -> None:
    """A database's statement_timeout cancelled `status` beside many tables with the server's
    message and pages of our SQL it was inside (CONTEXT), and no word of what to do."""
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'all-MiniLM-L6-v2')")
    # Rows enough that counting them exactly takes well past 50 ms (not queued: no worker here).
    conn.execute("ALTER TABLE docs DISABLE TRIGGER USER")
    conn.execute("INSERT INTO docs SELECT g, 'row ' || g FROM generate_series(1, 400000) g")
    done = run_cli(
        "status", "--exact", env={"DATABASE_URL": dsn, "PGOPTIONS": "-c statement_timeout=50"}
    )
    assert done.returncode == 1, done.stderr
    assert "statement timeout" in done.stderr and "CONTEXT" not in done.stderr, done.stderr
    assert "PGOPTIONS='-c statement_timeout=10min'" in done.stderr


def test_a_worker_whose_sessions_time_out_at_once_says_how_to_give_them_longer(
    conn: Conn, dsn: str
) -> None:
    """A statement_timeout of 1 ms cancelled the worker's start either in the setup of its
    session (reported as "cannot connect", and retried as a database down) or in its first
    reads (the server's message and pages of our SQL it was inside), with no word of what to
    do. Which of the two it meets depends on the machine's speed: both say the same."""
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'all-MiniLM-L6-v2')")
    done = run_cli(
        "run", "--once", env={"DATABASE_URL": dsn, "PGOPTIONS": "-c statement_timeout=1"}
    )
    assert done.returncode == 1, done.stderr
    assert "statement_timeout (the database's, the role's or PGOPTIONS')" in done.stderr
    assert "PGOPTIONS='-c statement_timeout=0'" in done.stderr, done.stderr
    assert "cannot connect" not in done.stderr and "CONTEXT" not in done.stderr, done.stderr


def test_a_client_encoding_other_than_utf8_does_not_stop_the_worker(
    conn: Conn, dsn: str, run_once: Callable[..., Worker], tiny_models: tuple[str, str]
) -> None:
    """A database's (or role's, or PGCLIENTENCODING's) client_encoding of LATIN1: the worker
    stopped at the first row Latin-1 cannot hold ("character with byte sequence 0xe6 0x97 0xa5
    in encoding UTF8 has no equivalent in encoding LATIN1"), at every start. Our sessions read
    and write UTF-8 whatever a client setting says."""
    conn.execute("CREATE TABLE docs (id text PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (tiny_models[0],))
    conn.execute("INSERT INTO docs VALUES ('日本1', '日本語の文章'), ('ø2', 'smørrebrød')")
    conn.execute(f'ALTER DATABASE "{conn.info.dbname}" SET client_encoding = LATIN1')
    run_once(model=tiny_models[0])
    assert conn.execute("SELECT id FROM docs WHERE embedding IS NULL").fetchall() == []
    done = run_cli("status", "docs", env={"DATABASE_URL": dsn, "PGCLIENTENCODING": "LATIN1"})
    assert done.returncode == 0, done.stderr


def test_a_latin1_database_with_text_keys_is_embedded(
    conn: Conn, dsn: str, run_once: Callable[..., Worker], tiny_models: tuple[str, str]
) -> None:
    """A LATIN1 database's client encoding is LATIN1 unless a client asks for another: the
    queue's jsonb messages (keys 'Ä1', 'ø2') stopped the worker with a UnicodeDecodeError, at
    every start."""
    name = f"{conn.info.dbname}_latin1"
    conn.execute(f'CREATE DATABASE "{name}" ENCODING LATIN1 LOCALE "C" TEMPLATE template0')
    try:
        latin1_dsn = psycopg.conninfo.make_conninfo(dsn, dbname=name)
        schema.migrate(latin1_dsn)
        with psycopg.connect(latin1_dsn, autocommit=True) as latin1:
            assert latin1.info.encoding == "iso8859-1"
            register_tiny_models(latin1)
            latin1.execute('CREATE TABLE "Dokumente" ("Schlüssel" text PRIMARY KEY, body text)')
            latin1.execute(
                "SELECT embeddings.watch('\"Dokumente\"', 'body', model => %s)", (tiny_models[0],)
            )
            latin1.execute("INSERT INTO \"Dokumente\" VALUES ('Ä1', 'café'), ('ø2', 'smørrebrød')")
            run_once(model=tiny_models[0], database_url=latin1_dsn)
            assert latin1.execute(
                'SELECT count(*) FROM "Dokumente" WHERE embedding IS NULL'
            ).fetchone() == (0,)
    finally:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
