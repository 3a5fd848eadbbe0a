"""What an operator's commands evaluate of a hostile table owner's objects (issue 36). `plan`,
run by the superuser through the real command line on the owner's tables before any ANALYZE,
must run none of the owner's code with the superuser's rights: not a cast of the owner's types
to text, not the owner's view, not a content function. The owner's code (PAYLOAD) records as
whom it ran and tries to make the owner a superuser; `contained()` checks it ran as the owner
or not at all."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.security.conftest import Roles, contained
from tests.support.models import MINILM
from tests.support.process import run_cli

# The owner's function of its own types, calling the payload: as a cast to text, and as a
# content function (STABLE, as watch() wants one).
HOSTILE_TEXT = (
    "CREATE FUNCTION {name}(v {type}) RETURNS text LANGUAGE sql STABLE"
    " AS $$ SELECT public.payload() $$"
)


def plan(roles: Roles, *argv: str) -> Any:
    """`embed-worker plan ARGV --json` as the superuser: the real entry point."""
    return run_cli("plan", *argv, "--json", env={"DATABASE_URL": roles.dsn})


def owner_table(roles: Roles, *statements: str) -> None:
    """The owner's `docs` (a few rows, never analyzed) and `statements`, run as the owner."""
    with roles.connect(roles.owner) as owner:
        owner.execute("CREATE TYPE pair AS (a text, b text)")
        owner.execute("CREATE TABLE docs (id int PRIMARY KEY, body text, parts pair)")
        owner.execute(
            "INSERT INTO docs SELECT g, 'text ' || g, ROW('a', 'b')::pair FROM generate_series(1, 3) g"
        )
        for statement in statements:
            owner.execute(statement.encode())


@pytest.mark.parametrize(
    ("content", "refusal"),
    [("docs", "docs has no column docs"), ("parts", "docs.parts has type public.pair, not text")],
)
def test_plan_casts_none_of_the_owners_types_to_text(
    roles: Roles, content: str, refusal: str
) -> None:
    """The content named is the table's row type (`docs`) or a column of the owner's composite
    type (`parts`), each with the owner's cast to text: reading its text would run the cast."""
    owner_table(
        roles,
        HOSTILE_TEXT.format(name="docs_text", type="docs"),
        "CREATE CAST (docs AS text) WITH FUNCTION docs_text(docs)",
        HOSTILE_TEXT.format(name="pair_text", type="pair"),
        "CREATE CAST (pair AS text) WITH FUNCTION pair_text(pair)",
    )
    result = plan(roles, "docs", "--content", content, "--model", MINILM)
    assert contained(roles) == []
    assert result.returncode == 2, result.stdout  # a usage error: watch() would refuse it too
    assert refusal in result.stderr


def test_plan_runs_none_of_a_view(roles: Roles) -> None:
    """A view's rows come from running it, with its reader's rights for the functions it
    calls: plan neither counts nor samples it (watch() takes tables only)."""
    owner_table(
        roles,
        "CREATE VIEW docs_view AS SELECT id, body || public.payload() AS body FROM docs"
        " WHERE public.payload() = ''",
    )
    result = plan(roles, "docs_view", "--content", "body", "--model", MINILM)
    assert contained(roles) == []
    assert result.returncode == 2, result.stdout
    assert "docs_view is a view" in result.stderr


def test_plan_evaluates_no_content_function(roles: Roles) -> None:
    """A content function is the owner's code: plan estimates without it, watched or not, for
    a backfill and for a model change."""
    owner_table(roles, HOSTILE_TEXT.format(name="doc_text", type="docs"))
    unwatched = plan(roles, "docs", "--content", "doc_text", "--model", MINILM)
    assert unwatched.returncode == 0, unwatched.stderr
    assert json.loads(unwatched.stdout)["tokens_per_row"] is None
    assert "content function" in json.loads(unwatched.stdout)["tokens_from"]
    with roles.connect() as su:
        su.execute("SELECT embeddings.watch('docs', 'doc_text', model => %s)", (MINILM,))
    for argv in (["docs"], ["docs", "--model", MINILM]):
        result = plan(roles, *argv)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["tokens"] is None
    assert contained(roles) == []
