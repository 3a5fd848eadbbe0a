"""The SQL reference (docs/sql.md) against the database and the API's list (sql/90_privileges.sql),
both ways: every object the page documents exists with exactly that signature, is public and
callable by whom the page says; every public object is on the page and in the list; every
function of the schema has a COMMENT, which says it is internal unless it is public; and PUBLIC
may execute the list's functions and no other."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from tests.support import sql_reference
from tests.support.sql_reference import Documented

Conn = psycopg.Connection[Any]

INTERNAL = "Internal to embed-worker"
API_LISTS = ("api_anyone", "api_owner", "api_owner_and_workers")
PUBLIC_LISTS = ("api_anyone", "internal_anyone")
RIGHTS_OF_LIST = {
    "api_anyone": "anyone",
    "api_owner": "owner",
    "api_owner_and_workers": "owner and workers",
}

# Every function and view of the schema but those generated per target, with what the page
# compares: a function's signature as Postgres prints it, its COMMENT, whether PUBLIC and a
# worker role (given grant_worker()) may execute it, or for a view SELECT from it.
CATALOG = """
SELECT p.oid, 'embeddings.' || p.proname, false,
       format('embeddings.%%s(%%s) RETURNS %%s', p.proname, pg_get_function_arguments(p.oid),
              pg_get_function_result(p.oid)),
       obj_description(p.oid, 'pg_proc'),
       has_function_privilege('public', p.oid, 'EXECUTE'),
       has_function_privilege(%(worker)s, p.oid, 'EXECUTE')
FROM pg_proc p
WHERE p.pronamespace = 'embeddings'::regnamespace AND p.proname !~ '^embeddings_[0-9]+_'
UNION ALL
SELECT c.oid, 'embeddings.' || c.relname, true, NULL, obj_description(c.oid, 'pg_class'),
       has_table_privilege('public', c.oid, 'SELECT'), has_table_privilege(%(worker)s, c.oid, 'SELECT')
FROM pg_class c
WHERE c.relnamespace = 'embeddings'::regnamespace AND c.relkind = 'v'
"""


@dataclass(frozen=True)
class Object:
    oid: int
    name: str
    is_view: bool
    signature: str | None
    comment: str | None
    public_may: bool
    worker_may: bool

    @property
    def rights(self) -> str:
        if self.public_may:
            return "anyone"
        return "owner and workers" if self.worker_may else "owner"


@pytest.fixture
def catalog(conn: Conn) -> Iterator[list[Object]]:
    worker = f"reference_worker_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {worker}")
    conn.execute("SELECT embeddings.grant_worker(%s)", (worker,))
    use_vector_schema(conn)  # signatures name halfvec as the page does
    rows = conn.execute(CATALOG, {"worker": worker}).fetchall()
    yield [Object(*row) for row in rows]
    conn.execute(f"DROP OWNED BY {worker}")
    conn.execute(f"DROP ROLE {worker}")


def use_vector_schema(conn: Conn) -> None:
    conn.execute(
        "SELECT set_config('search_path', 'pg_catalog, '"
        " || quote_ident(embeddings.vector_schema()), false)"
    )


def listed(conn: Conn) -> dict[str, set[int]]:
    """sql/90_privileges.sql's lists, as function oids."""
    use_vector_schema(conn)
    found: dict[str, set[int]] = {}
    for name, signatures in sql_reference.api_lists().items():
        found[name] = set()
        for signature in signatures:
            row = conn.execute("SELECT to_regprocedure(%s)::oid", (signature,)).fetchone()
            assert row is not None and row[0] is not None, (
                f"{name} lists {signature}: no such function"
            )
            found[name].add(row[0])
    return found


def problems(
    page: dict[str, Documented], catalog: list[Object], lists: dict[str, set[int]]
) -> list[str]:
    """Each way the page, the list and the database disagree, in words."""
    api = set().union(*(lists[name] for name in API_LISTS))
    return (
        page_problems(page, catalog, lists)
        + catalog_problems(page, catalog, api)
        + grant_problems(catalog, lists)
    )


def page_problems(
    page: dict[str, Documented], catalog: list[Object], lists: dict[str, set[int]]
) -> list[str]:
    """What the page says that the database or the list does not."""
    found: list[str] = []
    by_name: dict[str, list[Object]] = {}
    for obj in catalog:
        by_name.setdefault(obj.name, []).append(obj)
    rights_listed = {oid: RIGHTS_OF_LIST[name] for name in API_LISTS for oid in lists[name]}
    for name, doc in page.items():
        objects = by_name.get(name, [])
        if len(objects) != 1:
            found.append(
                f"{name}: documented, but the schema has {len(objects)} objects of that name"
            )
            continue
        obj = objects[0]
        if not obj.is_view and obj.oid not in rights_listed:
            found.append(f"{name}: documented, but not in the API's list (sql/90_privileges.sql)")
        elif not obj.is_view and rights_listed[obj.oid] != obj.rights:
            found.append(
                f"{name}: listed for {rights_listed[obj.oid]!r}, but callable by {obj.rights!r}"
            )
        if not obj.is_view and doc.signature != obj.signature:
            found.append(f"{name}: documented as {doc.signature!r}, but is {obj.signature!r}")
        if doc.rights != obj.rights:
            found.append(f"{name}: documented for {doc.rights!r}, but callable by {obj.rights!r}")
        if doc.examples == 0:
            found.append(f"{name}: no example")
    return found


def catalog_problems(
    page: dict[str, Documented], catalog: list[Object], api: set[int]
) -> list[str]:
    """Public objects the page leaves out, and COMMENTs missing or saying the wrong thing."""
    found: list[str] = []
    for obj in catalog:
        public = obj.is_view or obj.oid in api
        if not obj.comment:
            found.append(f"{obj.name}: no COMMENT")
        elif public == obj.comment.startswith(INTERNAL):
            kind = "public" if public else "internal"
            found.append(f"{obj.name}: {kind}, but its COMMENT says {obj.comment!r}")
        if public and obj.name not in page:
            found.append(f"{obj.name}: public, but not documented in docs/sql.md")
    return found


def grant_problems(catalog: list[Object], lists: dict[str, set[int]]) -> list[str]:
    """Functions PUBLIC may execute that the list does not grant it, and the other way."""
    may_public = {obj.oid for obj in catalog if obj.public_may and not obj.is_view}
    granted = set().union(*(lists[name] for name in PUBLIC_LISTS))
    names = {obj.oid: obj.name for obj in catalog}
    return [
        f"{names[oid]}: PUBLIC may execute it, but the list does not grant it"
        for oid in sorted(may_public - granted)
    ] + [
        f"{names[oid]}: listed for PUBLIC, but PUBLIC may not execute it"
        for oid in sorted(granted - may_public)
    ]


def test_the_sql_reference_the_apis_list_and_the_database_agree(
    conn: Conn, catalog: list[Object]
) -> None:
    assert problems(sql_reference.documented(), catalog, listed(conn)) == []


def test_the_api_is_small_and_every_section_is_read(conn: Conn, catalog: list[Object]) -> None:
    page = sql_reference.documented()
    functions = [d for d in page.values() if d.signature is not None]
    views = [obj for obj in catalog if obj.is_view]
    assert 30 <= len(functions) <= 60
    assert {obj.name for obj in views} <= set(page)
    assert all(d.rights is not None for d in page.values())


def test_a_changed_signature_right_or_section_is_found(conn: Conn, catalog: list[Object]) -> None:
    text = sql_reference.PAGE.read_text()
    lists = listed(conn)
    changed = text.replace(
        "query halfvec, k integer DEFAULT 10,", "query halfvec, k integer DEFAULT 20,", 1
    )
    assert any(
        p.startswith("embeddings.search:")
        for p in problems(sql_reference.documented(changed), catalog, lists)
    )
    start = text.index("### embeddings.unwatch_dropped")
    without = text[:start] + text[text.index("### ", start + 4) :]
    assert "embeddings.unwatch_dropped: public, but not documented in docs/sql.md" in problems(
        sql_reference.documented(without), catalog, lists
    )
    wrong_rights = text.replace(
        "### embeddings.grant_worker\n", "### embeddings.grant_worker\n", 1
    ).replace(
        "Who may call it: the schema's owner.\n\nGives existing role",
        "Who may call it: anyone.\n\nGives existing role",
        1,
    )
    assert any(
        p.startswith("embeddings.grant_worker: documented for 'anyone'")
        for p in problems(sql_reference.documented(wrong_rights), catalog, lists)
    )
    lists_more = {
        **lists,
        "internal_anyone": lists["internal_anyone"] - {min(lists["internal_anyone"])},
    }
    assert any(
        "PUBLIC may execute it, but the list does not grant it" in p
        for p in problems(sql_reference.documented(), catalog, lists_more)
    )
