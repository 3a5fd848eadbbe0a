"""A tenant's overloads run in none of our sessions (issue 46, defect 1).

Postgres picks an exact-type match anywhere on the search path over a pg_catalog function that
needs a cast or is polymorphic, even with pg_catalog first. A tenant that may CREATE in the
database makes a schema named after the role we connect as (a path's `"$user"`), or CREATEs in
`public`, and defines there `make_interval(secs smallint)` (psycopg sends a small int as a
smallint), `unnest(text[])` (pg_catalog's takes anyarray), `to_jsonb(integer)` (anyelement):
with such schemas on our sessions' path, the worker's own lease statement would run the
tenant's function as the worker, and as a superuser where the worker is one. Our sessions
resolve names in pg_catalog and in schemas only the installer controls, so these run nowhere.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.security.conftest import Roles, contained
from tests.support.models import MINILM
from worker import db
from worker.process.runner import Worker

# Exact-type overloads of what the worker's statements call unqualified, each running the
# payload (conftest.PAYLOAD: says as whom it ran, tries ALTER ROLE ... SUPERUSER and the other
# tenant's rows) before doing what pg_catalog's does.
OVERLOADS = """
CREATE FUNCTION {s}.make_interval(secs smallint) RETURNS interval LANGUAGE plpgsql AS
$f$ BEGIN PERFORM public.payload(); RETURN pg_catalog.make_interval(secs => secs); END $f$;
CREATE FUNCTION {s}.make_interval(secs integer) RETURNS interval LANGUAGE plpgsql AS
$f$ BEGIN PERFORM public.payload(); RETURN pg_catalog.make_interval(secs => secs); END $f$;
CREATE FUNCTION {s}.to_jsonb(v integer) RETURNS jsonb LANGUAGE plpgsql AS
$f$ BEGIN PERFORM public.payload(); RETURN pg_catalog.to_jsonb(v); END $f$;
CREATE FUNCTION {s}.to_jsonb(v text) RETURNS jsonb LANGUAGE plpgsql AS
$f$ BEGIN PERFORM public.payload(); RETURN pg_catalog.to_jsonb(v); END $f$;
"""
UNNEST = """
CREATE FUNCTION {s}.unnest(a {t}[]) RETURNS SETOF {t} LANGUAGE plpgsql AS
$f$ BEGIN PERFORM public.payload(); RETURN QUERY SELECT pg_catalog.unnest(a); END $f$;
"""
UNNESTED = ("text", "bigint", "integer", "jsonb", "timestamptz")


def plant(roles: Roles) -> list[str]:
    """The tenant's schemas named after the worker role and the superuser (USAGE to PUBLIC),
    and `public` (where it may CREATE), each with the overloads. Returns the schemas."""
    with roles.connect() as su:
        superuser = su.info.user
        su.execute(f"GRANT CREATE ON DATABASE {su.info.dbname} TO {roles.owner}")
    schemas = [roles.worker, superuser, "public"]
    with roles.connect(roles.owner) as owner:
        for schema in schemas:
            if schema != "public":
                owner.execute(f'CREATE SCHEMA "{schema}"')
                owner.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO PUBLIC')
            script = OVERLOADS + "".join(UNNEST.replace("{t}", t) for t in UNNESTED)
            owner.execute(script.replace("{s}", f'"{schema}"').encode())
    return schemas


def _owner_docs(roles: Roles) -> None:
    with roles.connect(roles.owner) as owner:
        owner.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
        owner.execute("INSERT INTO docs SELECT g, 'text ' || g FROM generate_series(1, 3) g")
    with roles.connect() as su:
        su.execute("SELECT embeddings.watch('docs', 'body', model => %s)", (MINILM,))


@pytest.mark.parametrize("as_superuser", [False, True], ids=["worker role", "superuser"])
def test_the_workers_statements_run_no_overload_a_tenant_planted(
    roles: Roles, run_once: Callable[..., Worker], as_superuser: bool
) -> None:
    """The worker leases, loads, writes and settles jobs of two tenants, as the least-privilege
    worker role and as a superuser; none of the overloads ran (the payload left no trace)."""
    _owner_docs(roles)
    plant(roles)
    with roles.connect(roles.tenant) as tenant:
        tenant.execute("INSERT INTO secrets SELECT g, 'more ' || g FROM generate_series(2, 4) g")
    run_once(database_url=roles.dsn if as_superuser else roles.worker_dsn, batch_size=2)
    assert contained(roles) == []
    with roles.connect() as su:
        assert su.execute("SELECT count(embedding) FROM docs").fetchone() == (3,)
        assert su.execute("SELECT count(embedding) FROM secrets").fetchone() == (4,)


def test_our_sessions_search_only_installer_schemas(roles: Roles) -> None:
    """Whatever the role's own search path names ("$user", public, a schema of the tenant's),
    our sessions' path is pg_catalog and pg_temp."""
    plant(roles)
    with roles.connect() as su:
        su.execute(f'ALTER ROLE {roles.worker} SET search_path = "$user", public, {roles.worker}')
    with db.connect(roles.worker_dsn) as conn:
        assert conn.execute("SELECT current_setting('search_path')").fetchone() == (
            "pg_catalog, pg_temp",
        )
        assert conn.execute("SELECT current_schemas(false)").fetchone() == (["pg_catalog"],)


def test_a_table_name_the_user_gives_resolves_in_the_roles_own_path(roles: Roles) -> None:
    """`embed-worker search notes` (and POST /search's "table", `plan`) finds the table the
    role's own sessions would: in its configured path, though our session searches pg_catalog
    only; a content function named to watch() likewise."""
    from worker.retrieval.targets import find_target

    with roles.connect() as su:
        su.execute(f"CREATE SCHEMA app AUTHORIZATION {roles.owner}")
        su.execute(f"GRANT USAGE ON SCHEMA app TO {roles.writer}")
        su.execute(f"ALTER ROLE {roles.writer} SET search_path = app, public")
        su.execute(f"ALTER ROLE {roles.owner} SET search_path = app, public")
    with roles.connect(roles.owner) as owner:
        for schema in ("app", "public"):  # the same name in public: the role's path says which
            owner.execute(f"CREATE TABLE {schema}.notes (id int PRIMARY KEY, body text)")
        owner.execute(
            "CREATE FUNCTION app.note_text(n app.notes) RETURNS text LANGUAGE sql STABLE"
            " AS $$ SELECT n.body $$"
        )
    with roles.connect() as su:  # the superuser's own path in this database, for its sessions
        su.execute(
            f"ALTER ROLE {su.info.user} IN DATABASE {su.info.dbname} SET search_path = app, public"
        )
    with roles.connect() as su:  # a new session: watch() finds note_text in that path
        su.execute("SELECT embeddings.watch('notes', 'note_text', model => %s)", (MINILM,))
        watched = su.execute(
            "SELECT source::text, content_function::text FROM embeddings.targets"
            " WHERE source = 'app.notes'::regclass"
        ).fetchone()
    assert watched == ("notes", "note_text(notes)")
    with db.connect(roles.dsn_of(roles.writer)) as conn:
        target = find_target(conn, "notes")
        assert (target.schema, target.table) == ("app", "notes")
        assert conn.execute("SELECT current_setting('search_path')").fetchone() == (
            "pg_catalog, pg_temp",
        )


def test_a_name_looked_up_in_a_path_given_runs_nothing_there(roles: Roles) -> None:
    """named_in_path(), a search's lookup of its table in the path its connection read once
    (worker/session_guard.py: start_path), takes whatever path its caller gives: with the
    tenant's schemas and their overloads first in it, it finds the name and runs nothing, and
    the caller's session has its own path back."""
    _owner_docs(roles)
    schemas = plant(roles)
    path = ", ".join(f'"{schema}"' for schema in schemas) + ", pg_catalog"
    with db.connect(roles.dsn_of(roles.stranger)) as conn:
        found = conn.execute(
            "SELECT embeddings_internal.named_in_path('docs', false, %s)"
            " OPERATOR(pg_catalog.=) 'public.docs'::pg_catalog.regclass::pg_catalog.oid,"
            " embeddings_internal.named_in_path('no_such_table', false, %s),"
            " pg_catalog.current_setting('search_path')",
            (path, path),
        ).fetchone()
    assert found == (True, None, "pg_catalog, pg_temp")
    assert contained(roles) == []
