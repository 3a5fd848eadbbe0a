"""Which content functions watch() accepts (issue 12, item 7): the worker and sweep() run them
with their own rights, often a superuser's, and compare their result before and after
embedding."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

Conn = psycopg.Connection[Any]


def test_a_volatile_content_function_is_refused(conn: Conn) -> None:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute(
        "CREATE FUNCTION stamped(d docs) RETURNS text LANGUAGE sql"  # VOLATILE by default
        " AS $$ SELECT d.body || clock_timestamp()::text $$"
    )
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="VOLATILE") as info:
        conn.execute("SELECT embeddings.watch('docs', 'stamped')")
    assert "STABLE" in (info.value.diag.message_hint or "")
    assert conn.execute("SELECT count(*) FROM embeddings.targets").fetchone() == (0,)


def test_a_content_function_owned_by_another_role_is_refused(conn: Conn, role: str) -> None:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute(
        "CREATE FUNCTION doc_text(d docs) RETURNS text LANGUAGE sql STABLE AS $$ SELECT d.body $$"
    )
    conn.execute(f"ALTER FUNCTION doc_text(docs) OWNER TO {role}")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match=f"owned by {role}") as info:
        conn.execute("SELECT embeddings.watch('docs', 'doc_text')")
    assert "OWNER TO" in (info.value.diag.message_hint or "")


def test_a_content_function_owned_by_the_table_owner_is_accepted(conn: Conn, role: str) -> None:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute(
        "CREATE FUNCTION doc_text(d docs) RETURNS text LANGUAGE sql STABLE AS $$ SELECT d.body $$"
    )
    conn.execute(f"ALTER TABLE docs OWNER TO {role}")
    conn.execute(f"ALTER FUNCTION doc_text(docs) OWNER TO {role}")
    conn.execute("SELECT embeddings.watch('docs', 'doc_text')")
    assert conn.execute("SELECT count(*) FROM embeddings.targets").fetchone() == (1,)
