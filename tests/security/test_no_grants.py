"""A login without grants calls every function of schema `embeddings` (issue 24 §1), the ones
generated for each target included, with arguments that name real targets, queues and keys:
nothing an operator reads changes (registry, queues, inbox, dead letters, deferrals, status,
provenance, backfills, model changes, our functions and their grants, the watched tables).
Functions are EXECUTE to PUBLIC unless revoked; only those that can write nothing stay so."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.security.conftest import Roles

Conn = psycopg.Connection[Any]

# Argument values by type (format_type()); any other type gets NULL of its type.
ARGUMENTS = {
    "bigint": "1",
    "smallint": "1",
    "double precision": "1",
    "text": "'embedding_jobs'",
    "name": "'embedding'",
    "boolean": "true",
    "regclass": "'public.docs'",
    "regtype": "'integer'",
    "regprocedure": "'public.note_text(public.notes)'",
    "interval": "'0 seconds'",
    "text[]": "ARRAY['1']",
    "bigint[]": "ARRAY[1]::bigint[]",
    "jsonb[]": "ARRAY['1'::jsonb]",
    "name[]": "ARRAY['id']::name[]",
    "regtype[]": "ARRAY['integer']::regtype[]",
    "smallint[]": "ARRAY[1]::smallint[]",
    "anyarray": "ARRAY[1]",
    "halfvec": "array_fill(0.1, ARRAY[384])::halfvec",
    "vector": "array_fill(0.1, ARRAY[384])::vector",
    "halfvec[]": "ARRAY[array_fill(0.1, ARRAY[384])::halfvec]",
    "real[]": "array_fill(0.1::real, ARRAY[384])",
}
# Columns of embeddings.status that move with the clock alone.
CLOCK_COLUMNS = {
    "oldest_pending_seconds",
    "rows_per_second",
    "change_rows_per_second",
    "change_eta_seconds",
}

# Our schemas, as an SQL list of regnamespace: the API's and the internals'.
OURS = "('embeddings'::regnamespace, 'embeddings_internal'::regnamespace)"


def argument(type_name: str, target_id: int) -> str:
    if type_name == "integer":
        return str(target_id)
    if type_name == "integer[]":
        return f"ARRAY[{target_id}]"
    if type_name == "jsonb":
        return f"""'{{"target": {target_id}, "keys": [1]}}'::jsonb"""
    if type_name == "embeddings.targets":
        return f"(SELECT t FROM embeddings.targets t WHERE t.id = {target_id})"
    return ARGUMENTS.get(type_name, f"NULL::{type_name}")


@pytest.fixture
def world(roles: Roles) -> dict[str, int]:
    """Targets of every kind, with queued jobs, a dead letter, a deferral, a provenance, a model
    change, a running backfill: something for every function to change."""
    with roles.connect() as su:
        su.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
        su.execute("INSERT INTO docs SELECT g, 'text ' || g FROM generate_series(1, 1500) g")
        su.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
        su.execute("INSERT INTO notes VALUES (1, 'a note')")
        su.execute(
            "CREATE FUNCTION note_text(n notes) RETURNS text LANGUAGE sql STABLE"
            " AS $$ SELECT n.body $$"
        )
        su.execute("CREATE TABLE long_docs (id int PRIMARY KEY, body text)")
        su.execute("INSERT INTO long_docs VALUES (1, 'a long document')")
        ids = {
            table: int(su.execute(f"SELECT embeddings.watch({call})").fetchone()[0])  # type: ignore[index]
            for table, call in {
                "docs": "'docs', 'body'",
                "notes": "'notes', 'note_text'",
                "long_docs": "'long_docs', 'body', chunk_tokens => 50",
            }.items()
        }
        su.execute("SELECT embeddings.rewatch('notes', model => 'bge-small-en-v1.5')")
        su.execute(
            "INSERT INTO embeddings.failures (target_id, target, row_key, queue, message,"
            " attempts, last_error) VALUES (%s, 'public.docs.embedding', '7', 'embedding_jobs',"
            """ '{"target": 1, "keys": [7]}', 5, 'boom')""",
            (ids["docs"],),
        )
        su.execute(
            "SELECT embeddings_internal.note_deferrals(ARRAY[%s], ARRAY['a real reason'], ARRAY[1])",
            (ids["docs"],),
        )
        su.execute(
            "SELECT embeddings_internal.claim_provenance(%s, false, 'gte-small', 'r1', 'fp32')",
            (ids["docs"],),
        )
        su.execute("INSERT INTO docs VALUES (2001, 'written after: in the inbox')")
        # A remote reranker under the name text arguments get ('embedding_jobs'): what
        # unregister_reranker() or register_reranker() would change, were they let run.
        su.execute("SELECT embeddings.register_reranker('embedding_jobs', 'cohere')")
    return ids


def snapshot(conn: Conn) -> dict[str, Any]:
    """Everything an operator reads, as values."""
    found: dict[str, Any] = {}
    tables = conn.execute(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname IN ('embeddings', 'pgmq') AND c.relkind = 'r'"
        "   OR (n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relname <> 'loot')"
        " ORDER BY 1"
    ).fetchall()
    for (table,) in tables:
        found[table] = sorted(
            str(r[0])
            for r in conn.execute(
                sql.SQL("SELECT to_jsonb(x) FROM {} x").format(sql.SQL(table))
            ).fetchall()
        )
    found["status"] = [
        {k: v for k, v in row.items() if k not in CLOCK_COLUMNS}
        for row in conn.execute(
            "SELECT to_jsonb(s) FROM embeddings.status_exact s ORDER BY target_id"
        ).fetchall()
        for row in [row[0]]
    ]
    found["functions"] = conn.execute(
        "SELECT p.oid::regprocedure::text, md5(p.prosrc), p.proowner::regrole::text,"
        " p.prosecdef, p.proconfig, p.proacl::text FROM pg_proc p"
        f" WHERE p.pronamespace IN {OURS} ORDER BY 1"
    ).fetchall()
    found["grants"] = conn.execute(
        "SELECT c.oid::regclass::text, c.relacl::text, c.relrowsecurity FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname IN ('public', 'embeddings', 'embeddings_internal', 'pgmq') ORDER BY 1"
    ).fetchall()
    found["triggers"] = conn.execute(
        "SELECT tgrelid::regclass::text, tgname, tgenabled FROM pg_trigger"
        " WHERE NOT tgisinternal ORDER BY 1, 2"
    ).fetchall()
    found["policies"] = conn.execute("SELECT polname FROM pg_policy ORDER BY 1").fetchall()
    found["roles"] = conn.execute(
        "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles"
        " ORDER BY 1"
    ).fetchall()
    return found


def test_a_login_without_grants_changes_nothing_an_operator_reads(
    roles: Roles, world: dict[str, int]
) -> None:
    with roles.connect() as su:
        functions = su.execute(
            "SELECT p.oid::regprocedure::text, p.pronamespace::regnamespace::text || '.' || p.proname,"
            " p.proretset, ARRAY(SELECT format_type(a, NULL) FROM unnest(p.proargtypes) AS a)"
            f" FROM pg_proc p WHERE p.pronamespace IN {OURS} ORDER BY 1"
        ).fetchall()
        before = snapshot(su)
    assert len(functions) > 300  # ours, both schemas, and those generated for the three targets
    ran: list[str] = []
    with roles.connect(roles.stranger) as stranger:
        stranger.execute("SET statement_timeout = '5s'")
        for signature, name, returns_set, types in functions:
            args = ", ".join(argument(t, world["docs"]) for t in types)
            call = f"{name}({args})"
            try:
                stranger.execute(f"SELECT * FROM {call}" if returns_set else f"SELECT {call}")
            except psycopg.Error:
                continue
            ran.append(signature)
    with roles.connect() as su:
        after = snapshot(su)
    for part in before:
        assert after[part] == before[part], part
    assert ran  # the read-only ones ran: the calls were well formed


def test_public_may_execute_only_what_can_write_nothing(
    roles: Roles, world: dict[str, int]
) -> None:
    """Functions are EXECUTE to PUBLIC by default: every one that may write, or runs with its
    owner's rights, is revoked (sql/90_privileges.sql, and the generated ones as they are
    made). A trigger function cannot be called, only used by a trigger: one of invoker's rights
    may stay PUBLIC (Postgres checks EXECUTE when a partition clones a row trigger), never one
    that runs as its owner. guard_restore() is volatile and writes nothing: it sets its
    caller's own settings, as set_config() does, for every guard around a table owner's code
    (whoever calls one: a worker role, the table's owner; sql/32_access.sql)."""
    with roles.connect() as su:
        wrong = su.execute(
            "SELECT p.oid::regprocedure::text FROM pg_proc p"
            f" WHERE p.pronamespace IN {OURS}"
            "   AND has_function_privilege(%s, p.oid, 'EXECUTE')"
            "   AND (p.prosecdef OR (p.provolatile = 'v'"
            "        AND p.prorettype NOT IN ('trigger'::regtype, 'event_trigger'::regtype)))"
            "   AND p.oid <> 'embeddings_internal.guard_restore(text[])'::regprocedure"
            " ORDER BY 1",
            (roles.stranger,),
        ).fetchall()
    assert wrong == []


def test_no_role_but_ours_may_use_our_types(roles: Roles) -> None:
    """The composite types our functions take (watch()'s options) are no one else's to use: a
    table or function of a tenant's over one would keep `migrate` from replacing it
    (worker/schema/code.py refuses such dependents), so a login cannot make one."""
    with roles.connect() as su:
        types = [
            r[0]
            for r in su.execute(
                "SELECT c.reltype::regtype::text FROM pg_class c"
                f" WHERE c.relnamespace IN {OURS} AND c.relkind = 'c' ORDER BY 1"
            )
        ]
        usable = su.execute(
            "SELECT t FROM unnest(%s::text[]) AS t"
            " WHERE has_type_privilege(%s, t::regtype, 'USAGE')"
            "    OR has_type_privilege('public', t::regtype, 'USAGE')",
            (types, roles.owner),
        ).fetchall()
    assert "embeddings_internal.watch_options" in types and usable == []
    with roles.connect(roles.owner) as owner:
        for name in types:
            for ddl in (
                f"CREATE TABLE public.holds_ours (o {name})",
                f"CREATE FUNCTION public.takes_ours(o {name}) RETURNS int LANGUAGE sql AS 'SELECT 1'",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege, match="type"):
                    owner.execute(ddl)


# A row key and a content no login without grants may read: an e-mail address, as in issue 36.
SECRET_KEY = "alice.secret@example.com"
SECRET_TEXT = "the secret content of alice's row"


def test_a_login_without_grants_reads_no_keys_or_content(roles: Roles) -> None:
    """Row keys and content wherever we keep them (issue 36 §8): the registry's cursors (a
    backfill's and a verifying sweep's `after_key`), dead letters, fingerprints, the inbox, the
    queues and their archives, long documents' progress, the side and chunk tables. A login
    without grants reads every column of every relation of ours it may read, and finds none."""
    with roles.connect() as su:
        su.execute("CREATE TABLE people (email text PRIMARY KEY, body text)")
        su.execute("INSERT INTO people VALUES (%s, %s)", (SECRET_KEY, SECRET_TEXT))
        key, json_key = SECRET_KEY, f'"{SECRET_KEY}"'
        ids = [
            int(su.execute(f"SELECT embeddings.watch('people', 'body'{store})").fetchone()[0])  # type: ignore[index]
            for store in (
                ", embedding_column => 'v_side', store => 'side'",
                ", embedding_column => 'v_chunks', chunk_tokens => 50",
            )
        ]
        for target_id in ids:
            # Where each cursor holds a real key: a backfill and a verifying sweep under way.
            su.execute(
                "INSERT INTO embeddings.backfills (target_id, every_row, after_key) VALUES (%s, true, %s)"
                " ON CONFLICT (target_id) DO UPDATE SET after_key = excluded.after_key",
                (target_id, json_key),
            )
            su.execute(
                "INSERT INTO embeddings.verify_cursors (target_id, after_key, prune_after)"
                " VALUES (%s, %s, %s)",
                (target_id, json_key, json_key),
            )
            su.execute(
                "INSERT INTO embeddings.failures (target_id, target, row_key, queue, message,"
                " attempts, last_error) VALUES (%s, 'public.people', %s, 'embedding_jobs', %s, 5, %s)",
                (
                    target_id,
                    json_key,
                    f'{{"target": {target_id}, "keys": [{json_key}]}}',
                    SECRET_TEXT,
                ),
            )
            su.execute(
                "SELECT embeddings_internal.record_fingerprints(%s, false, ARRAY[%s], ARRAY[md5(%s)])",
                (target_id, SECRET_KEY, SECRET_TEXT),
            )
            su.execute(
                "INSERT INTO embeddings.documents (target_id, row_key, digest, state, bytes, target_version)"
                " VALUES (%s, %s, md5(%s), 'in_progress', 1, 1)",
                (target_id, key, SECRET_TEXT),
            )
            su.execute(
                "SELECT pgmq.send('embedding_jobs', %s::jsonb)",
                (f'{{"target": {target_id}, "keys": [{json_key}]}}',),
            )
        su.execute("UPDATE people SET body = body || '.'")  # its key in the inbox
        relations = su.execute(
            "SELECT c.oid::regclass::text, a.attname FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
            " WHERE (n.nspname IN ('embeddings', 'pgmq') OR c.relname LIKE 'people%%')"
            "   AND c.relkind IN ('r', 'p', 'v', 'm')"
            " ORDER BY 1, a.attnum"
        ).fetchall()
        # (the markers are all there to be read, by the superuser)
        for place in ("embeddings.backfills", "embeddings.verify_cursors", "pgmq.q_embedding_jobs"):
            assert SECRET_KEY in str(su.execute(f"SELECT to_jsonb(x) FROM {place} x").fetchall())
    read: list[str] = []
    leaked: list[str] = []
    with roles.connect(roles.stranger) as stranger:
        for relation, column in relations:
            statement = sql.SQL("SELECT {}::text FROM {}").format(
                sql.Identifier(column), sql.SQL(relation)
            )
            try:
                values = stranger.execute(statement).fetchall()
            except psycopg.errors.InsufficientPrivilege:
                continue
            read.append(f"{relation}.{column}")
            if SECRET_KEY in str(values) or SECRET_TEXT in str(values):
                leaked.append(f"{relation}.{column}")
    assert leaked == []
    assert "embeddings.targets.source" in read  # what PUBLIC reads, it reads
