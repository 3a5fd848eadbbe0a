"""A read-only search role, granted what the docs tell (docs/http.md: USAGE on the table's schema,
SELECT on the table and its store; docs/sql.md: the status grants), searches and reads the status
as installed and where PUBLIC's rights were revoked (docs/security.md, "Revoking from PUBLIC").
There it could not: search() and hybrid_search() stopped at `permission denied for function
search`, then at each internal function they run with their caller's rights and at each
target's generated search functions; embeddings.grant_search() gives it those by name."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.integration.test_status_table import MONITORING
from tests.support import stores
from tests.support.fetch import fetch_value
from tests.support.hardening import HARDENING
from tests.support.login_roles import login_role
from tests.support.process import run_cli
from worker.process.runner import Worker

Conn = psycopg.Connection[Any]

VECTOR = "(SELECT embedding FROM docs WHERE id = 1)"
# What the role runs: each store kind's search and hybrid search, a filter, match_chunks().
SEARCHES = {
    "search, row": f"SELECT count(*) FROM embeddings.search('docs', {VECTOR}, 3)",
    "search, filter": f"""SELECT count(*) FROM embeddings.search('docs', {VECTOR}, 3,
                                 '{{"id": {{"in": [1, 2]}}}}')""",
    "search, side": f"SELECT count(*) FROM embeddings.search('side', {VECTOR}, 3)",
    "search, chunks": f"SELECT count(*) FROM embeddings.search('notes', {VECTOR}, 3)",
    "hybrid, row": f"SELECT count(*) FROM embeddings.hybrid_search('docs', 'cats', {VECTOR}, 3)",
    "hybrid, side, every word, rrf": f"""SELECT count(*) FROM embeddings.hybrid_search('side',
        'birds sing', {VECTOR}, 3, text_match => 'all', fusion => 'rrf')""",
    "hybrid, chunks": f"SELECT count(*) FROM embeddings.hybrid_search('notes', 'stocks', {VECTOR}, 3)",
    "match_chunks": f"SELECT count(*) FROM embeddings.match_chunks('notes', {VECTOR}, 3)",
    "status": "SELECT count(*) FROM embeddings.status",
}
TEXTS = {
    "docs": {1: "cats sleep all day", 2: "dogs bark at cats", 3: "stocks fell"},
    "side": {1: "birds sing", 2: "birds fly south", 3: "fish swim"},
    "notes": {1: "stocks fell sharply", 2: "markets rose", 3: "cats again"},
}


def watched(conn: Conn, model: str) -> None:
    """docs (row store), side (a side table), notes (chunks), full-text search on each."""
    options = {"docs": "", "side": ", store => 'side'", "notes": ", chunk_tokens => 64"}
    for table, texts in TEXTS.items():
        stores.texts_table(conn, texts, table=table)
        conn.execute(
            f"SELECT embeddings.watch('{table}', 'body', model => %s{options[table]})", (model,)
        )
        conn.execute(f"SELECT embeddings.enable_fts('{table}')")


def searched(dsn: str) -> dict[str, str]:
    """Each of SEARCHES as the role of `dsn`: its count, or the error's first line."""
    found = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, query in SEARCHES.items():
            try:
                found[name] = str(fetch_value(conn, query))
            except psycopg.Error as exc:
                found[name] = str(exc).splitlines()[0]
    return found


@pytest.mark.parametrize("hardened", [False, True], ids=["as installed", "PUBLIC revoked"])
def test_a_search_role_granted_as_documented_searches_and_reads_the_status(
    conn: Conn, dsn: str, minilm: str, run_once: Callable[..., Worker], hardened: bool
) -> None:
    watched(conn, minilm)
    run_once()
    if hardened:
        for statement in HARDENING:
            conn.execute(statement)
    with login_role(conn, dsn, "app_search") as search_dsn:
        role = conninfo_to_dict(search_dsn)["user"]
        # docs/http.md's search role, and docs/sql.md's status grants
        conn.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        conn.execute(f"GRANT SELECT ON docs, side, side_embeddings, notes, notes_chunks TO {role}")
        conn.execute(MONITORING.format(role=role))
        expected = {name: "3" for name in SEARCHES}  # (status: a row per target)
        expected["search, filter"] = "2"
        found = searched(search_dsn)
        if hardened:
            # (the status's grants give USAGE on schema embeddings: what stops a search now is
            # its function, then each internal one it runs as its caller, then the target's)
            assert found.pop("status") == "3"
            assert set(found.values()) == {
                "permission denied for function search",
                "permission denied for function hybrid_search",
                "permission denied for function match_chunks",
            }
            conn.execute("SELECT embeddings.grant_search(%s)", (role,))
            found = searched(search_dsn)
        assert found == expected
        # embed-worker search as that role (POST /search's code), its question embedded here
        result = run_cli(
            "search", "docs", "cats", "-k", "2", "--json", env={"DATABASE_URL": search_dsn}
        )
        assert result.returncode == 0, result.stderr
        # A table watched afterwards: its search functions are given as search() is.
        stores.texts_table(conn, {1: "later"}, table="later")
        conn.execute("SELECT embeddings.watch('later', 'body', model => %s)", (minilm,))
        conn.execute(f"GRANT SELECT ON later TO {role}")
        run_once()
        with psycopg.connect(search_dsn, autocommit=True) as searcher:
            later = f"SELECT count(*) FROM embeddings.search('later', {VECTOR}, 3)"
            assert fetch_value(searcher, later) == 1


# Functions of ours an explicit grant names `role` in (its oid: 0 for PUBLIC; a NULL acl is
# PUBLIC's default), leaving out trigger functions (never called) and the forwarders kept for
# workers of 0.3.0 (which no search of this release calls).
EXECUTABLE = """
SELECT p.oid::regprocedure::text FROM pg_proc p
WHERE p.pronamespace IN ('embeddings'::regnamespace, 'embeddings_internal'::regnamespace)
  AND p.prorettype NOT IN ('trigger'::regtype, 'event_trigger'::regtype)
  AND coalesce(obj_description(p.oid, 'pg_proc'), '') NOT LIKE '%%kept for workers of release 0.3.0%%'
  AND CASE WHEN p.proacl IS NULL THEN %(role)s = 0
           ELSE EXISTS (SELECT FROM aclexplode(p.proacl) a
                        WHERE a.grantee = %(role)s AND a.privilege_type = 'EXECUTE') END
"""
READABLE = """
SELECT c.oid::regclass::text FROM pg_class c
WHERE c.relnamespace IN ('embeddings'::regnamespace, 'embeddings_internal'::regnamespace)
  AND EXISTS (SELECT FROM aclexplode(c.relacl) a WHERE a.grantee = %(role)s AND a.privilege_type = 'SELECT')
"""


def test_grant_search_gives_what_public_has_as_installed_and_nothing_more(
    conn: Conn, dsn: str, minilm: str
) -> None:
    """On a schema as installed, the role is granted by name exactly the functions PUBLIC may
    execute (every target's generated ones for its searches among them), and reads none of our
    tables PUBLIC may not read; so a kind of generated function made PUBLIC's is one
    grant_search() gives too."""
    watched(conn, minilm)
    with login_role(conn, dsn, "app_search") as search_dsn:
        role = conninfo_to_dict(search_dsn)["user"]
        conn.execute("SELECT embeddings.grant_search(%s)", (role,))
        oid = fetch_value(conn, "SELECT %s::regrole::oid", (role,))

        def of(query: str, grantee: int) -> set[str]:
            return {r[0] for r in conn.execute(query, {"role": grantee}).fetchall()}

        assert of(EXECUTABLE, oid) == of(EXECUTABLE, 0)
        assert any("embeddings_" in f and "_visible()" in f for f in of(EXECUTABLE, oid))
        assert of(READABLE, oid) == {"embeddings.targets", "embeddings.rerankers"}
        assert of(READABLE, oid) <= of(READABLE, 0)
        schemas = "SELECT has_schema_privilege(%s, n, 'USAGE') FROM unnest(ARRAY['embeddings', 'embeddings_internal', 'pgmq']) n"
        assert [r[0] for r in conn.execute(schemas, (role,)).fetchall()] == [True, True, False]


@pytest.mark.parametrize(
    ("role", "error", "message"),
    [
        ("public", psycopg.errors.ReservedName, "PUBLIC has what grant_search() gives"),
        (None, psycopg.errors.NullValueNotAllowed, "role_name must not be NULL"),
        ("no_such_role", psycopg.errors.UndefinedObject, 'role "no_such_role" does not exist'),
    ],
)
def test_grant_search_refuses_public_and_a_role_that_is_not_there(
    conn: Conn, role: str | None, error: type[psycopg.Error], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        conn.execute("SELECT embeddings.grant_search(%s)", (role,))


# The functions each target's searches run as their caller (grant_search() gives them by name).
SEARCH_FUNCTIONS = """
SELECT p.oid::regprocedure::text, p.oid::bigint, has_function_privilege('public', p.oid, 'EXECUTE'),
       has_function_privilege(%s, p.oid, 'EXECUTE')
FROM pg_proc p
WHERE p.pronamespace = 'embeddings'::regnamespace
  AND p.proname ~ '^embeddings_[0-9]+_(search|nearest|text_ranking|bm25_ranking|visible)$'
ORDER BY 1
"""


@pytest.mark.parametrize("hardened", [False, True], ids=["as installed", "PUBLIC revoked"])
def test_search_functions_made_after_grant_search_follow_the_revocation_from_public(
    conn: Conn, dsn: str, minilm: str, run_once: Callable[..., Worker], hardened: bool
) -> None:
    """Where PUBLIC's EXECUTE on search() was revoked, a target's search functions made
    afterwards (a table watched later, a watched one altered: the event trigger regenerates
    them) are not PUBLIC's either, and are the search roles': those that may
    execute search(). As installed, they stay PUBLIC's."""
    watched(conn, minilm)
    if hardened:
        for statement in HARDENING:
            conn.execute(statement)
    with login_role(conn, dsn, "app_search") as search_dsn:
        role = conninfo_to_dict(search_dsn)["user"]
        conn.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        conn.execute("SELECT embeddings.grant_search(%s)", (role,))
        side_id = fetch_value(
            conn, "SELECT id FROM embeddings.targets WHERE source = 'side'::regclass"
        )
        before = {r[0]: r[1] for r in conn.execute(SEARCH_FUNCTIONS, (role,)).fetchall()}
        # Regenerated: ALTER TABLE (the event trigger); made: a side store with full-text
        # search watched afterwards (its search, rankings and visible()).
        conn.execute("ALTER TABLE notes ADD COLUMN extra integer")
        conn.execute("ALTER TABLE docs ADD COLUMN extra integer")
        stores.texts_table(conn, {1: "later birds", 2: "later fish"}, table="later")
        conn.execute(
            "SELECT embeddings.watch('later', 'body', model => %s, store => 'side')", (minilm,)
        )
        conn.execute("SELECT embeddings.enable_fts('later')")
        made = conn.execute(SEARCH_FUNCTIONS, (role,)).fetchall()
        # every one made again (notes' and docs' regenerated, later's new), side's kept
        remade = {name for name, oid, _, _ in made if before.get(name) != oid}
        assert {name for name in before if name not in remade} == {
            name for name in before if name.startswith(f"embeddings.embeddings_{side_id}_")
        }
        assert any("_nearest(" in name for name in remade)
        assert any("_visible(" in name for name in remade - set(before))
        assert {(public, searcher) for _, _, public, searcher in made} == {(not hardened, True)}
        conn.execute(f"GRANT SELECT ON docs, side, side_embeddings, notes, notes_chunks TO {role}")
        conn.execute(f"GRANT SELECT ON later, later_embeddings TO {role}")
        run_once()
        expected = {name: "3" for name in SEARCHES if name != "status"}
        expected["search, filter"] = "2"
        assert {n: v for n, v in searched(search_dsn).items() if n != "status"} == expected
        with psycopg.connect(search_dsn, autocommit=True) as searcher:
            later = f"SELECT count(*) FROM embeddings.hybrid_search('later', 'birds', {VECTOR}, 3)"
            assert fetch_value(searcher, later) == 2


# Each role's EXECUTE on each target's search functions and on search(), by function name with
# the target's id left out (a function made again has a new oid, and a new target a new id).
ROLE_SEARCHES = """
SELECT r.role, pg_catalog.regexp_replace(p.proname, '^embeddings_[0-9]+_', t.source::text || '.')
FROM unnest(%(roles)s::text[]) r(role), pg_proc p
JOIN embeddings.targets t ON p.proname ~ ('^embeddings_' || t.id || '_(search|nearest|text_ranking|bm25_ranking|visible)$')
WHERE p.pronamespace = 'embeddings'::regnamespace AND has_function_privilege(r.role, p.oid, 'EXECUTE')
UNION ALL
SELECT r.role, 'search()' FROM unnest(%(roles)s::text[]) r(role)
WHERE has_function_privilege(r.role, 'embeddings.search(regclass, halfvec, integer, jsonb, name)', 'EXECUTE')
"""


@pytest.mark.parametrize(
    "order",
    ["revoked, then granted", "granted, then revoked", "granted, made again, then revoked"],
)
def test_search_functions_made_again_keep_the_worker_and_search_roles_grants(
    conn: Conn,
    dsn: str,
    minilm: str,
    tiny_models: tuple[str, str],
    run_once: Callable[..., Worker],
    order: str,
) -> None:
    """What a worker role (grant_worker()) and a search role (grant_search()) may execute of
    each target's search functions is what they had before the functions were made again
    (ALTER TABLE, a model change, enable_fts()), and a table watched later's is alike, whether
    PUBLIC's rights were revoked before the grants or after. A worker role granted after the
    revocation was granted them without search() and lost them when they were made again; one
    granted before lacked bm25_ranking; and where the grants came first and a table was altered
    before the revocation, both roles lost that table's (PUBLIC's alone), its searches refused."""
    watched(conn, minilm)
    with login_role(conn, dsn, "w") as worker_dsn, login_role(conn, dsn, "s") as search_dsn:
        roles = [conninfo_to_dict(d)["user"] for d in (worker_dsn, search_dsn)]
        worker, searcher = roles

        def grant() -> None:
            conn.execute("SELECT embeddings.grant_worker(%s)", (worker,))
            conn.execute("SELECT embeddings.grant_search(%s)", (searcher,))

        def revoke() -> None:
            for statement in HARDENING:
                conn.execute(statement)

        def executable() -> set[tuple[str, str]]:
            return {(r[0], r[1]) for r in conn.execute(ROLE_SEARCHES, {"roles": roles})}

        if order == "revoked, then granted":
            revoke()
            grant()
        else:
            grant()
            if order == "granted, then revoked":
                revoke()
        before = executable()
        conn.execute("ALTER TABLE docs ADD COLUMN extra integer")
        conn.execute(
            "SELECT embeddings.watch('side', 'body', model => %s, store => 'side')",
            (tiny_models[0],),
        )
        conn.execute("SELECT embeddings.enable_fts('notes', 'simple')")
        stores.texts_table(conn, {1: "later birds"}, table="later")
        conn.execute("SELECT embeddings.watch('later', 'body', model => %s)", (minilm,))
        conn.execute("SELECT embeddings.enable_fts('later')")
        if order == "granted, made again, then revoked":
            revoke()
        after = executable()
        later = {(role, name) for role, name in after if name.startswith("later.")}
        assert after - later == before
        # The worker role has them all where it has search() (granted while PUBLIC had it),
        # none where it has not; the search role all of them.
        for role in roles:
            has_search = (role, "search()") in after
            assert has_search == (role == searcher or order != "revoked, then granted")
            of_role = {name for r, name in after if r == role and name != "search()"}
            made = {name for r, name in after if r == searcher and name != "search()"}
            assert of_role == (made if has_search else set()), role
        assert {"docs.bm25_ranking", "side.visible", "later.search"} <= made
        conn.execute(f"GRANT USAGE ON SCHEMA public TO {searcher}")
        conn.execute(f"GRANT SELECT ON docs, notes, notes_chunks TO {searcher}")
        run_once()
        found = searched(search_dsn)
        assert found["search, row"] == "3" and found["hybrid, chunks"] == "3", found
