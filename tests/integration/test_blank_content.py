"""Blank content is judged one way everywhere: the worker (Python's str.strip()) and every SQL
of ours (status, sweep, the verifying sweep, a model change's counts) take the same characters
for white space, whatever the database's LC_CTYPE (QA ops2, finding 4: NBSP, NEL and U+3000 were
blank to the worker and content to SQL under C.UTF-8, so the worker cleared them, status said
"not queued", and sweep queued them again, for ever)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import psycopg

from tests.support.cluster import Cluster
from tests.support.fetch import fetch_value
from worker import schema
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]

SPACES = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]
NOT_SPACES = ["a", "\u200b", "\u180e", "\ufeff", "\u00ad", "\x1b", "\u3001"]


def test_the_worker_and_sql_agree_on_blank_content(
    conn: Conn, tiny_models: tuple[str, str], run_once: Callable[..., Worker]
) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (tiny_models[0],))
    blanks = ["\u00a0", "\u0085", "\u3000\u3000", "\x1c\x1f ", "\u2028\t"]
    conn.execute(
        "INSERT INTO docs SELECT i, b FROM unnest(%s::text[]) WITH ORDINALITY u(b, i)",
        (blanks,),
    )
    conn.execute("INSERT INTO docs VALUES (100, 'words')")
    run_once(model=tiny_models[0])
    row = conn.execute(
        "SELECT total_rows, embedded_rows, cleared_rows, pending_jobs, problem"
        " FROM embeddings.status_exact"
    ).fetchone()
    assert row == (len(blanks) + 1, 1, len(blanks), 0, None)
    assert fetch_value(conn, "SELECT embeddings.sweep()") == 0
    assert fetch_value(conn, "SELECT embeddings.sweep(verify => true)") == 0


def test_every_character_python_calls_white_space_is_blank_to_sql(conn: Conn) -> None:
    pattern = fetch_value(conn, "SELECT embeddings_internal.nonblank_pattern()")
    spaces = conn.execute(
        "SELECT c FROM unnest(%s::text[]) c WHERE c ~ %s", (SPACES, pattern)
    ).fetchall()
    assert spaces == []
    others = conn.execute(
        "SELECT c FROM unnest(%s::text[]) c WHERE c !~ %s", (NOT_SPACES, pattern)
    ).fetchall()
    assert others == []


def test_the_pattern_works_in_a_latin1_database(cluster: Cluster) -> None:
    name = cluster.create_database(prefix="latin1")
    try:
        with psycopg.connect(cluster.admin_dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name}")
            admin.execute(
                f"CREATE DATABASE {name} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'"
                " TEMPLATE template0"
            )
        schema.migrate(cluster.dsn(name))
        with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
            conn.execute("SET client_encoding = 'LATIN1'")
            latin1 = [c for c in SPACES if ord(c) < 256]
            assert "\u00a0" in latin1 and "\x85" in latin1
            pattern = fetch_value(conn, "SELECT embeddings_internal.nonblank_pattern()")
            assert (
                conn.execute(
                    "SELECT c FROM unnest(%s::text[]) c WHERE c ~ %s", (latin1, pattern)
                ).fetchall()
                == []
            )
            assert fetch_value(conn, "SELECT %s ~ %s", ("\u00a0x", pattern)) is True
    finally:
        cluster.drop_database(name)
