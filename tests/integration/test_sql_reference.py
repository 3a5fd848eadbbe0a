"""The SQL reference (docs/sql.md) against the database and the API's list (sql/90_privileges.sql),
both ways: every object the page documents exists with exactly that signature, is public and
callable by whom the page says; every public object is on the page and in the list; schema
`embeddings` holds the API and, while workers of 0.3.0 may run, the forwarders kept for them
(sql/95_compat_0_3_0.sql, listed on the page as such) and nothing else; every function of both
schemas has a COMMENT, which says it is internal unless it is public; and PUBLIC may execute
the lists' functions and no other."""

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
PUBLIC_LISTS = ("api_anyone", "internal_anyone", "compat_anyone")
COMPAT_LISTS = ("compat_anyone", "compat_owner", "compat_workers")
RIGHTS_OF_LIST = {
    "api_anyone": "anyone",
    "api_owner": "owner",
    "api_owner_and_workers": "owner and workers",
}

# Every function and view of both schemas but those generated per target, with what the page
# compares: a function's signature as Postgres prints it, its COMMENT, whether PUBLIC and a
# worker role (given grant_worker()) may execute it, or for a view SELECT from it.
CATALOG = """
SELECT p.oid, n.nspname || '.' || p.proname, false,
       format('%%s.%%s(%%s) RETURNS %%s', n.nspname, p.proname, pg_get_function_arguments(p.oid),
              pg_get_function_result(p.oid)),
       obj_description(p.oid, 'pg_proc'),
       has_function_privilege('public', p.oid, 'EXECUTE'),
       has_function_privilege(%(worker)s, p.oid, 'EXECUTE')
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE (n.nspname = 'embeddings' AND p.proname !~ '^embeddings_[0-9]+_')
   OR n.nspname = 'embeddings_internal'
UNION ALL
SELECT c.oid, n.nspname || '.' || c.relname, true, NULL, obj_description(c.oid, 'pg_class'),
       has_table_privilege('public', c.oid, 'SELECT'), has_table_privilege(%(worker)s, c.oid, 'SELECT')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname IN ('embeddings', 'embeddings_internal') AND c.relkind = 'v'
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
    def schema(self) -> str:
        return self.name.split(".", 1)[0]

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


def listed(conn: Conn, page: str | None = None) -> dict[str, set[int]]:
    """sql/90_privileges.sql's lists, as function oids; with the forwarders kept for workers of
    0.3.0: those PUBLIC may run and the owner's (sql/95_compat_0_3_0.sql), the worker roles'
    (embeddings_internal.compat_worker_functions()) and those the page lists."""
    use_vector_schema(conn)
    found: dict[str, set[int]] = {}
    row = conn.execute(
        "SELECT array_agg(f::text) FROM unnest(embeddings_internal.compat_worker_functions()) f"
    ).fetchone()
    lists = {
        **sql_reference.api_lists(),
        "compat_anyone": sql_reference.compat_lists()["anyone"],
        "compat_owner": sql_reference.compat_lists()["owner_only"],
        "compat_workers": list(row[0] if row and row[0] else []),
        "compat_documented": sql_reference.compat_listed(page),
    }
    for name, signatures in lists.items():
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
        + placement_problems(catalog, lists)
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


def placement_problems(catalog: list[Object], lists: dict[str, set[int]]) -> list[str]:
    """Schema embeddings holds the API and the forwarders kept for workers of 0.3.0, each of
    those listed on the page and saying when it goes; everything else is internal."""
    found: list[str] = []
    api = set().union(*(lists[name] for name in API_LISTS))
    compat = set().union(*(lists[name] for name in COMPAT_LISTS))
    for obj in catalog:
        if obj.is_view:
            if obj.schema != "embeddings":
                found.append(f"{obj.name}: a view outside schema embeddings")
        elif obj.oid in api:
            if obj.schema != "embeddings":
                found.append(f"{obj.name}: in the API's list, but not in schema embeddings")
        elif obj.oid in compat:
            if obj.schema != "embeddings":
                found.append(f"{obj.name}: kept for 0.3.0, but not in schema embeddings")
            if obj.oid not in lists["compat_documented"]:
                found.append(f"{obj.name}: kept for 0.3.0, but not listed so in docs/sql.md")
            if not obj.comment or "0.3.0" not in obj.comment or "0.5.0" not in obj.comment:
                found.append(f"{obj.name}: kept for 0.3.0, but its COMMENT does not say so")
        elif obj.schema == "embeddings":
            found.append(
                f"{obj.name}: in schema embeddings, but neither in the API nor kept for 0.3.0"
            )
    names = {obj.oid: obj.name for obj in catalog}
    found += [
        f"{names.get(oid, oid)}: listed in docs/sql.md as kept for 0.3.0, but is not"
        for oid in sorted(lists["compat_documented"] - compat)
    ]
    return found


def grant_problems(catalog: list[Object], lists: dict[str, set[int]]) -> list[str]:
    """Functions PUBLIC may execute that the list does not grant it, and the other way."""
    may_public = {obj.oid for obj in catalog if obj.public_may and not obj.is_view}
    granted = set().union(*(lists[name] for name in PUBLIC_LISTS))
    names = {obj.oid: obj.name for obj in catalog}
    workers_only = {obj.oid for obj in catalog if obj.worker_may and not obj.public_may}
    return (
        [
            f"{names[oid]}: kept for workers of 0.3.0, but worker roles may not run it alone"
            for oid in sorted(lists["compat_workers"] - workers_only)
        ]
        + [
            f"{names[oid]}: PUBLIC may execute it, but the list does not grant it"
            for oid in sorted(may_public - granted)
        ]
        + [
            f"{names[oid]}: listed for PUBLIC, but PUBLIC may not execute it"
            for oid in sorted(granted - may_public)
        ]
    )


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


def test_a_function_left_in_the_api_s_schema_or_a_forwarder_undocumented_is_found(
    conn: Conn, catalog: list[Object]
) -> None:
    lists = listed(conn)
    with_stray = [
        *catalog,
        Object(0, "embeddings.stray", False, None, "Internal to embed-worker", False, False),
    ]
    assert "embeddings.stray: in schema embeddings, but neither in the API nor kept for 0.3.0" in (
        placement_problems(with_stray, lists)
    )
    text = sql_reference.PAGE.read_text()
    without = text.replace(
        "- `embeddings.lock_target(integer)`: the schema's owner and worker roles\n", "", 1
    )
    assert without != text
    assert "embeddings.lock_target: kept for 0.3.0, but not listed so in docs/sql.md" in problems(
        sql_reference.documented(without), catalog, listed(conn, without)
    )
