"""watch()'s refusals of a named key give hints that work when followed (QA 5a): a key of a
type without a default btree operator class is refused for its type, not told to add a unique
constraint it cannot have; a key unique only by a DEFERRABLE constraint is told why that does
not count, and the fix given makes watch() accept it."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

Conn = psycopg.Connection[Any]


def test_a_key_of_a_json_domain_is_refused_for_its_type(conn: Conn) -> None:
    conn.execute("CREATE DOMAIN jkey AS json")
    conn.execute("CREATE TABLE jk (k jkey NOT NULL, body text)")
    conn.execute("CREATE UNIQUE INDEX ON jk ((k::text))")
    with pytest.raises(psycopg.errors.FeatureNotSupported) as refused:
        conn.execute("SELECT embeddings.watch('jk', 'body', key => array['k'])")
    message = str(refused.value)
    assert (
        "key column public.jk.k has type public.jkey (a domain over json), which has no default"
        " btree operator class: rows are found by their key's equality and order" in message
    ), message
    assert "not unique" not in message
    assert "ADD UNIQUE" not in (refused.value.diag.message_hint or "")


@pytest.mark.parametrize("when", ["INITIALLY DEFERRED", "INITIALLY IMMEDIATE"])
def test_a_key_unique_only_by_a_deferrable_constraint_is_told_why_and_how(
    conn: Conn, when: str
) -> None:
    conn.execute(
        f"CREATE TABLE dk (k int NOT NULL, body text, CONSTRAINT dk_k UNIQUE (k) DEFERRABLE {when})"
    )
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as refused:
        conn.execute("SELECT embeddings.watch('dk', 'body', key => array['k'])")
    assert str(refused.value).startswith(
        "key (k) of public.dk is unique only by its DEFERRABLE constraint dk_k, which does not count"
    ), refused.value
    hint = refused.value.diag.message_hint or ""
    assert "checked when it fires (at COMMIT when deferred)" in hint, hint
    fix = "ALTER TABLE public.dk DROP CONSTRAINT dk_k, ADD CONSTRAINT dk_k UNIQUE (k);"
    assert fix in hint, hint
    conn.execute(fix)
    conn.execute("SELECT embeddings.watch('dk', 'body', key => array['k'])")


def test_a_second_constraint_that_is_not_deferrable_counts(conn: Conn) -> None:
    conn.execute("CREATE TABLE dk (k int NOT NULL, body text, UNIQUE (k) DEFERRABLE)")
    conn.execute("ALTER TABLE dk ADD UNIQUE (k)")  # the hint's other way
    conn.execute("SELECT embeddings.watch('dk', 'body', key => array['k'])")
