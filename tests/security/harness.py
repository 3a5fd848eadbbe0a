"""The hostile tenant's world for tests/security/test_harness.py (issue 36).

The table owner (`roles.owner`, the hostile tenant) owns a table of every kind embed-worker
watches: a row store, a side store, a chunked one, a content function's, a partitioned one, a
replica's (rows applied by logical replication), one keyed by its own domain, one of documents
(files in a bytea column, which the worker parses). It plants its code
at every hook it controls (HOOKS): row, statement and deferred constraint triggers on its tables
and on the store tables watch() made for it, its content function, a check of its key domain, a
cast of its row type to text and a view (for `plan`), a row security policy (run by whoever
reads the table but its owner: a search as the application role), and functions named like
pg_catalog's in a schema of its own (`evil`) that a search path naming `evil` first would pick,
with exact-type overloads of everything our SQL names unqualified in schemas named after each
role we connect as and in `public` (tests/security/name_capture.py).

Wherever it runs, the planted code (`public.hook(where)`) records as whom it ran and from where,
leaves session state behind with set_config(..., false) (SESSION_STATE: the search path with
`evil` first, a read-only default, other formats) and tries to escalate: ALTER ROLE ...
SUPERUSER, the other tenant's rows (its table, and its target's owner-run load function), a
model of its own in embeddings.models, a server file (where API keys live). Each success is a
row in `loot` that `verdict()` reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.security import name_capture
from tests.security.conftest import Roles, escalations
from tests.support.models import MINILM

# Every kind of table the owner has, with how the superuser watches it.
KINDS = {
    "docs_row": "'body'",
    "docs_side": "'body', store => 'side'",
    "docs_chunked": "'body', chunk_tokens => 16",
    "docs_fn": "'docs_fn_text'",
    "docs_part": "'body'",
    "docs_replica": "'body', replica => true",
    "docs_domain": "'body'",
    # documents (bytea, extracted by the worker), with a context header template
    "docs_document": "'body', chunk_tokens => 16, context_header => '{title}: {headings}. '",
}
STORES = {
    "docs_side": "docs_side_embeddings",
    "docs_chunked": "docs_chunked_chunks",
    "docs_document": "docs_document_chunks",
}

# What the planted code leaves in whatever session it runs in (set_config(name, value, false)).
SESSION_STATE = {
    "search_path": "evil, pg_catalog, public",
    "default_transaction_read_only": "on",
    "DateStyle": "SQL, DMY",
    "IntervalStyle": "sql_standard",
    "TimeZone": "Pacific/Kiritimati",
    "bytea_output": "escape",
    "extra_float_digits": "-15",
    "transform_null_equals": "on",
    "default_transaction_isolation": "serializable",
}

# The settings SESSION_STATE names, as a session has them now (name, setting).
SESSION_STATE_NOW = (
    "SELECT name, setting FROM pg_settings WHERE lower(name) = ANY(ARRAY["
    + ", ".join(f"'{name.lower()}'" for name in SESSION_STATE)
    + "])"
)


def session_state_of_a_fresh(dsn: str) -> dict[str, str]:
    """SESSION_STATE's settings in a new session of ours (db.connect: reset on connecting)."""
    from worker import db

    with db.connect(dsn) as conn:
        return dict(conn.execute(SESSION_STATE_NOW).fetchall())


# The hooks, by where the code sits (a test checks each is planted: `planted()`).
HOOKS = (
    "row trigger",
    "statement trigger",
    "deferred trigger",
    "store row trigger",
    "store deferred trigger",
    "content function",
    "key domain check",
    "cast to text",
    "view",
    "search path functions",
    "row security policy",
)

_HOOK_FUNCTION = (
    """
CREATE FUNCTION public.hook(place text) RETURNS boolean LANGUAGE plpgsql AS $f$
DECLARE
    setting record;
BEGIN
    INSERT INTO public.loot VALUES (current_user, 'ran: ' || place);"""
    + escalations("'escalated: superuser from ' || place")
    + """    BEGIN
        EXECUTE pg_catalog.format(
            'INSERT INTO public.loot SELECT current_user, ''secret: '' || l.content'
            ' FROM embeddings.embeddings_%s_load(ARRAY[''1''], ARRAY[''1'']) l', {secrets_target});
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    BEGIN
        INSERT INTO embeddings.models (name, dimensions, max_tokens, pooling)
        VALUES ('planted-' || pg_catalog.md5(place), 8, 8, 'mean');
        INSERT INTO public.loot VALUES (current_user, 'escalated: a model registered from ' || place);
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    BEGIN
        PERFORM pg_catalog.pg_read_file('/proc/self/environ');
        INSERT INTO public.loot VALUES (current_user, 'escalated: a server file read from ' || place);
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    FOR setting IN SELECT * FROM pg_catalog.jsonb_each_text('{state}'::jsonb) LOOP
        PERFORM pg_catalog.set_config(setting.key, setting.value, false);
    END LOOP;
    RETURN true;
END
$f$;
GRANT EXECUTE ON FUNCTION public.hook(text) TO PUBLIC;
CREATE FUNCTION public.hook_trigger() RETURNS trigger LANGUAGE plpgsql AS
$f$ BEGIN PERFORM public.hook(TG_ARGV[0] || ' on ' || TG_TABLE_NAME); RETURN NULL; END $f$;

CREATE SCHEMA evil;
GRANT USAGE ON SCHEMA evil TO PUBLIC;
CREATE FUNCTION evil.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql AS
$f$ BEGIN PERFORM public.hook('search path functions'); RETURN pg_catalog.clock_timestamp(); END $f$;
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE plpgsql AS
$f$ BEGIN PERFORM public.hook('search path functions'); RETURN pg_catalog.now(); END $f$;
CREATE FUNCTION evil.make_interval(secs double precision) RETURNS interval LANGUAGE plpgsql AS
$f$ BEGIN PERFORM public.hook('search path functions'); RETURN pg_catalog.make_interval(secs => secs); END $f$;
CREATE FUNCTION evil.md5(t text) RETURNS text LANGUAGE plpgsql AS
$f$ BEGIN PERFORM public.hook('search path functions'); RETURN pg_catalog.md5(t); END $f$;
CREATE FUNCTION evil.count_eq(a integer, b integer) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS
$f$ BEGIN PERFORM public.hook('search path functions'); RETURN a OPERATOR(pg_catalog.=) b; END $f$;
CREATE OPERATOR evil.= (LEFTARG = integer, RIGHTARG = integer, FUNCTION = evil.count_eq);
CREATE FUNCTION evil.text_eq(a text, b text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS
$f$ BEGIN PERFORM public.hook('search path functions'); RETURN a OPERATOR(pg_catalog.=) b; END $f$;
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.text_eq);

CREATE FUNCTION public.key_ok(k integer) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS
$f$ BEGIN PERFORM public.hook('key domain check'); RETURN true; END $f$;
CREATE DOMAIN public.hostile_key AS integer CHECK (public.key_ok(VALUE));
"""
)

_TABLES = """
CREATE TABLE docs_row (id integer PRIMARY KEY, body text);
CREATE TABLE docs_side (id integer PRIMARY KEY, body text);
CREATE TABLE docs_chunked (id integer PRIMARY KEY, body text);
CREATE TABLE docs_fn (id integer PRIMARY KEY, body text);
CREATE FUNCTION docs_fn_text(d docs_fn) RETURNS text LANGUAGE plpgsql STABLE AS
$f$ BEGIN PERFORM public.hook('content function'); RETURN d.body; END $f$;
CREATE TABLE docs_part (id integer PRIMARY KEY, body text) PARTITION BY RANGE (id);
CREATE TABLE docs_part_1 PARTITION OF docs_part FOR VALUES FROM (0) TO (1000000);
CREATE TABLE docs_replica (id integer PRIMARY KEY, body text);
CREATE TABLE docs_domain (id public.hostile_key PRIMARY KEY, body text);
CREATE TABLE docs_document (id integer PRIMARY KEY, body bytea);
CREATE FUNCTION docs_row_text(d docs_row) RETURNS text LANGUAGE plpgsql STABLE AS
$f$ BEGIN PERFORM public.hook('cast to text'); RETURN d.body; END $f$;
CREATE CAST (docs_row AS text) WITH FUNCTION docs_row_text(docs_row);
CREATE VIEW docs_view AS SELECT id, body FROM docs_row WHERE public.hook('view');
ALTER TABLE docs_fn ENABLE ROW LEVEL SECURITY;
CREATE POLICY hooked ON docs_fn USING (public.hook('row security policy')) WITH CHECK (true);
"""

_TRIGGERS = """
CREATE TRIGGER hook_row AFTER INSERT OR UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION public.hook_trigger('{kind}row trigger');
CREATE TRIGGER hook_statement AFTER INSERT OR UPDATE ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION public.hook_trigger('{kind}statement trigger');
CREATE CONSTRAINT TRIGGER hook_deferred AFTER INSERT OR UPDATE ON {table}
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.hook_trigger('{kind}deferred trigger');
"""

ROWS = 4


@dataclass(frozen=True)
class World:
    roles: Roles
    secrets_target: int


def build(roles: Roles) -> World:
    """The owner's tables, watched by the superuser, with every hook planted; the loot empty."""
    import json

    with roles.connect() as su:
        row = su.execute(
            "SELECT id FROM embeddings.targets WHERE source = 'secrets'::regclass"
        ).fetchone()
        assert row is not None
        secrets_target = int(row[0])
        su.execute(f"GRANT CREATE ON DATABASE {su.info.dbname} TO {roles.owner}")
    with roles.connect(roles.owner) as owner:
        owner.execute(
            _HOOK_FUNCTION.replace("{owner}", roles.owner)
            .replace("{secrets_target}", str(secrets_target))
            .replace("{state}", json.dumps(SESSION_STATE))
            .encode()
        )
        owner.execute(_TABLES.encode())
        for table in KINDS:
            if table != "docs_part":  # (constraint triggers: not on a partitioned table)
                owner.execute(_TRIGGERS.format(table=table, kind="").encode())
        owner.execute(_TRIGGERS.format(table="docs_part_1", kind="").encode())
        for table in KINDS:
            owner.execute(f"GRANT SELECT, INSERT, UPDATE ON {table} TO {roles.writer}")
        owner.execute(f"GRANT SELECT ON docs_view TO {roles.writer}")
    for table in KINDS:  # (its triggers leave their state in the session that inserts)
        with roles.connect(roles.owner) as owner:
            text = f"'document ' || g || ' of {table}'"
            if table == "docs_document":  # a Markdown file: a heading, then its text
                text = f"convert_to('# Part ' || g || E'\\n\\n' || {text}, 'UTF8')"
            owner.execute(f"INSERT INTO {table} SELECT g, {text} FROM generate_series(1, {ROWS}) g")
    for table, args in KINDS.items():
        with roles.connect() as su:
            su.execute(f"SELECT embeddings.watch('{table}', {args}, model => '{MINILM}')")
    with roles.connect() as su:  # hybrid search's full-text side: a side store, and the table
        su.execute("SELECT embeddings.enable_fts('docs_side', 'english')")  # whose policy is
        su.execute("SELECT embeddings.enable_fts('docs_fn', 'english')")  # the owner's code
    with roles.connect(roles.owner) as owner:
        for store in STORES.values():
            owner.execute(f"GRANT SELECT ON {store} TO {roles.writer}")
            owner.execute(_TRIGGERS.format(table=store, kind="store ").encode())
    plant_overloads(roles)
    with roles.connect() as su:
        su.execute("TRUNCATE loot")
    return World(roles=roles, secrets_target=secrets_target)


def plant_overloads(roles: Roles) -> list[str]:
    """The name-capture floor (tests/security/name_capture.py): the owner's schemas named after
    each role we connect as (the worker role, the application role that searches, the
    superuser), USAGE to PUBLIC, and `public`, each with exact-type overloads of everything our
    SQL names unqualified. Returns the schemas."""
    with roles.connect() as su:
        superuser = su.info.user
    schemas = [roles.worker, roles.writer, superuser, "public"]
    with roles.connect(roles.owner) as owner:
        for schema in schemas[:-1]:
            owner.execute(f'CREATE SCHEMA "{schema}"')
            owner.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO PUBLIC')
        owner.execute(name_capture.plant_script(schemas).encode())
    return schemas


def verdict(roles: Roles, *allowed: str) -> list[tuple[str, str]]:
    """Everything the planted code recorded, after checking that it ran only as the owner (or as
    `allowed`: a role that itself reads the owner's table runs the owner's code, as in any
    Postgres database) and gained nothing. Empties the loot for the next operation."""
    with roles.connect() as su:
        loot = [(str(r), str(w)) for r, w in su.execute("SELECT ran_as, what FROM loot")]
        superuser = su.execute(
            "SELECT rolsuper FROM pg_roles WHERE rolname = %s", (roles.owner,)
        ).fetchone()
        installed = su.execute("SELECT to_regclass('embeddings.models')").fetchone()
        planted_models: Any = (0,)  # (after uninstall there is no registry to write to)
        if installed != (None,):
            planted_models = su.execute(
                "SELECT count(*) FROM embeddings.models WHERE name LIKE 'planted-%%'"
            ).fetchone()
        su.execute("TRUNCATE loot")
    assert superuser == (False,), f"the owner became a superuser: {loot}"
    assert planted_models == (0,), loot
    assert [w for _, w in loot if w.startswith(("secret", "escalated"))] == [], loot
    # A planted overload runs in the owner's own sessions only, if anywhere: never in ours.
    captured = sorted(
        {(r, w) for r, w in loot if w == "ran: search path functions" and r != roles.owner}
    )
    assert captured == [], f"a planted overload ran in another role's session: {captured}"
    strangers = sorted({(r, w) for r, w in loot if r not in {roles.owner, *allowed}})
    assert strangers == [], f"the owner's code ran as another role: {strangers}"
    return loot


def planted(loot: list[tuple[str, str]]) -> set[str]:
    """The hooks that ran, by name (the `ran: ...` records)."""
    found = set()
    for _, what in loot:
        if what.startswith("ran: "):
            place = what.removeprefix("ran: ")
            found.add(place.split(" on ")[0])
    return found
