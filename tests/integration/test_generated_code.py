"""The code watch() generates for each kind of table, as text: the golden files of
tests/integration/generated/ (<kind>.golden: SQL, kept out of the tree's code) hold what
embeddings_internal.target_code() returns (sql/26_render.sql: the builders' output, every statement the
installers run but grants), and a changed template shows here as a diff of the generated code.

After a deliberate change of a template (or of what feeds one), write the files again and read
their diff in review:

    make golden

(that is: EMBED_UPDATE_GOLDEN=1 .venv/bin/pytest tests/integration/test_generated_code.py)."""

from __future__ import annotations

import contextlib
import difflib
import os
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.models import MINILM

Conn = psycopg.Connection[Any]

GOLDEN = Path(__file__).parent / "generated"
UPDATE = os.environ.get("EMBED_UPDATE_GOLDEN") == "1"
OWNER = "golden_owner"  # the tables' owner: its name is written into the generated code

# One table of each kind, watched in this order (target ids 1, 2, ...): (columns, watch()'s
# arguments after the table's name).
KINDS = {
    "plain": ("id bigint PRIMARY KEY, body text", "'body', model => %s"),
    "composite": (
        "region text, n integer, body text, PRIMARY KEY (region, n)",
        "'body', model => %s",
    ),
    "side": ("id integer PRIMARY KEY, body text", "'body', model => %s, store => 'side'"),
    "chunked": ("id integer PRIMARY KEY, body text", "'body', model => %s, chunk_tokens => 64"),
    "function": ("id integer PRIMARY KEY, title text, body text", "'doc_text', model => %s"),
    "documents": (
        "id integer PRIMARY KEY, body bytea",
        "'body', model => %s, chunk_tokens => 64, context_header => '{title}: '",
    ),
    "fulltext": (
        "id integer PRIMARY KEY, body text",
        "'body', model => %s, store => 'side', fts => 'english', fts_title_weight => 2",
    ),
}


def generated(conn: Conn, target: int) -> str:
    """Target `target`'s code as a golden file holds it."""
    rows = conn.execute(
        "SELECT c.part, c.name, c.statement FROM embeddings.targets t,"
        " embeddings_internal.target_code(t) WITH ORDINALITY AS c(part, name, statement, i)"
        " WHERE t.id = %s ORDER BY c.i",
        (target,),
    ).fetchall()
    return "".join(
        f"-- {part}: {name}\n{statement.rstrip()};\n\n" for part, name, statement in rows
    )


@pytest.fixture
def watched(conn: Conn) -> dict[str, int]:
    """Every kind's table, owned by OWNER, watched: each kind's target id."""
    if conn.execute("SELECT embeddings.vector_schema()").fetchone() != ("public",):
        pytest.skip("the golden files are of pgvector installed in schema public")
    if conn.execute("SELECT FROM pg_roles WHERE rolname = %s", (OWNER,)).fetchone() is None:
        # (another test's database may make it meanwhile: roles are the cluster's)
        with contextlib.suppress(psycopg.errors.DuplicateObject):
            conn.execute(f"CREATE ROLE {OWNER}")
    conn.execute(f"GRANT CREATE ON SCHEMA public TO {OWNER}")
    conn.execute(f"SET ROLE {OWNER}")
    for kind, (columns, _) in KINDS.items():
        conn.execute(f"CREATE TABLE docs_{kind} ({columns})")
    conn.execute(
        "CREATE FUNCTION doc_text(d docs_function) RETURNS text LANGUAGE sql STABLE"
        " AS $$ SELECT d.title || ' ' || d.body $$"
    )
    conn.execute("RESET ROLE")
    targets = {}
    for kind, (_, args) in KINDS.items():
        row = conn.execute(f"SELECT embeddings.watch('docs_{kind}', {args})", (MINILM,)).fetchone()
        targets[kind] = int((row or (0,))[0])
    return targets


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_generated_code_is_the_golden_files(
    conn: Conn, watched: dict[str, int], kind: str
) -> None:
    text = generated(conn, watched[kind])
    golden = GOLDEN / f"{kind}.golden"
    if UPDATE:
        golden.write_text(text)
    expected = golden.read_text() if golden.is_file() else ""
    diff = "".join(
        difflib.unified_diff(
            expected.splitlines(keepends=True),
            text.splitlines(keepends=True),
            f"{golden.relative_to(Path.cwd()) if golden.is_relative_to(Path.cwd()) else golden}",
            "generated now",
        )
    )
    assert not diff, f"the generated code changed (make golden writes it again):\n{diff}"


def test_the_generated_code_is_what_is_installed(conn: Conn, watched: dict[str, int]) -> None:
    """The golden files hold what runs: every function the generated code creates is installed,
    and every function installed for a target is in its generated code."""
    for kind, target in watched.items():
        made = {
            name
            for (name,) in conn.execute(
                "SELECT DISTINCT c.name FROM embeddings.targets t, embeddings_internal.target_code(t) c"
                " WHERE t.id = %s AND c.statement ~ '^CREATE (OR REPLACE )?FUNCTION'",
                (target,),
            ).fetchall()
        }
        installed = {
            name
            for (name,) in conn.execute(
                "SELECT DISTINCT p.proname::text FROM pg_proc p"
                " WHERE p.pronamespace = 'embeddings'::regnamespace AND p.proname ~ %s",
                (f"^embeddings_{target}_",),
            ).fetchall()
        }
        assert made == installed, kind


def test_render_quotes_each_value_as_its_placeholder_says(conn: Conn) -> None:
    row = conn.execute(
        "SELECT embeddings_internal.render('SELECT %(col)I FROM %(rel)s WHERE x = %(v)L AND y = %(n)L',"
        " jsonb_build_object('col', 'We''ird Col', 'rel', 'public.t', 'v', 'it''s', 'n', NULL::text))"
    ).fetchone()
    assert row == ("""SELECT "We'ird Col" FROM public.t WHERE x = 'it''s' AND y = NULL""",)


def test_render_refuses_a_placeholder_without_a_value(conn: Conn) -> None:
    with pytest.raises(psycopg.errors.UndefinedParameter, match=r"%\(missing\)I"):
        conn.execute("SELECT embeddings_internal.render('SELECT %(missing)I', '{}')")


def test_a_name_holding_the_quote_of_generated_bodies_is_refused(conn: Conn) -> None:
    """A column named so would end the $body$-quoted body of a generated function."""
    conn.execute('CREATE TABLE docs (id int PRIMARY KEY, "x$body$y" text)')
    with pytest.raises(psycopg.errors.InvalidName, match=r"\$body\$"):
        conn.execute("SELECT embeddings.watch('docs', 'x$body$y', model => %s)", (MINILM,))
    assert conn.execute("SELECT count(*) FROM embeddings.targets").fetchone() == (0,)


def test_a_sessions_plans_of_the_guards_settings_do_not_grow_with_its_tables(conn: Conn) -> None:
    """A session keeps a plan for each expression of each PL/pgSQL function it ran. Each guard
    spelled out the 25 settings it puts back (an expression each, in each of a target's nine
    guards): a worker's session held 2 MB more for every table it had written, 2 GB beside
    1,000 tables. The guards share guard_save() and guard_restore() now: a table's guards add
    no plan of the settings."""
    settings_plans = (
        "SELECT count(*) FROM pg_backend_memory_contexts"
        " WHERE name = 'CachedPlanSource' AND ident LIKE '%current_setting%'"
    )
    counts: list[int] = []
    for n in range(3):
        conn.execute(f"CREATE TABLE docs{n} (id int PRIMARY KEY, body text)")
        row = conn.execute(
            "SELECT embeddings.watch(%s, 'body', model => %s)", (f"docs{n}", MINILM)
        ).fetchone()
        assert row is not None
        with conn.transaction():  # a guard with the least in it: LOCK TABLE, as the owner
            conn.execute(f"SELECT embeddings.embeddings_{row[0]}_lock()")
        (count,) = conn.execute(settings_plans).fetchone() or (0,)
        counts.append(count)
    assert counts[0] > 0 and counts == counts[:1] * 3, counts
