"""`downgrade` to base with objects of the user's inside schema embeddings (QA restore2, finding
5): DROP SCHEMA ... CASCADE took a view, a table and a function of theirs along without a word.
The downgrade refuses, names each with the statement that moves it out, and changes nothing."""

from __future__ import annotations

import psycopg
import pytest

from tests.migration.scenarios import watch_every_kind_0_3_0
from tests.support.schema_dump import pg_dump_schema
from worker import exceptions, schema


def test_downgrade_refuses_to_drop_the_users_objects_in_our_schema(empty_dsn: str) -> None:
    schema.migrate(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        watch_every_kind_0_3_0(conn)
        conn.execute("CREATE TABLE embeddings.my_notes (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO embeddings.my_notes VALUES (1, 'kept')")
        conn.execute("CREATE VIEW embeddings.my_docs AS SELECT 1 AS one")
        conn.execute(
            "CREATE FUNCTION embeddings.my_double(x int) RETURNS int LANGUAGE sql AS 'SELECT 2 * x'"
        )
    before = pg_dump_schema(empty_dsn)

    with pytest.raises(exceptions.EmbedWorkerError) as refused:
        schema.downgrade(empty_dsn)

    message = str(refused.value)
    listed = [
        line.strip()
        for line in message.splitlines()
        if line.startswith("  ") and "ALTER" not in line
    ]
    assert listed == [
        "function embeddings.my_double(integer)",
        "table embeddings.my_notes",
        "view embeddings.my_docs",
    ], message
    moves = [line.strip() for line in message.splitlines() if line.startswith("  ALTER")]
    assert moves == [
        "ALTER FUNCTION embeddings.my_double(integer) SET SCHEMA public;",
        "ALTER TABLE embeddings.my_notes SET SCHEMA public;",
        "ALTER VIEW embeddings.my_docs SET SCHEMA public;",
    ]
    assert "nothing was changed" in message
    assert pg_dump_schema(empty_dsn) == before

    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        for move in moves:
            conn.execute(move)
    schema.downgrade(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regnamespace('embeddings')").fetchone() == (None,)
        assert conn.execute("SELECT note FROM public.my_notes").fetchone() == ("kept",)
        assert conn.execute("SELECT public.my_double(one) FROM public.my_docs").fetchone() == (2,)
