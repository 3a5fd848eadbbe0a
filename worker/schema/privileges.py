"""What a code reinstall (worker/schema/install.py: reinstall_code) keeps of the rights others
were given or denied on our objects.

The reinstall drops the code and runs sql/'s files again, which grant as a fresh install does.
Three things an operator did would go with it:

- *Grants to other roles on the code* (a monitoring role's SELECT on embeddings.status and
  EXECUTE on target_status(boolean)): made again on the objects of the same identity
  (`extra_grants`, `restore_grants`).
- *Grants on a function that became a forwarder* (sql/95_compat_0_3_0.sql): the forwarder runs
  the internal function with its caller's rights, so a grant on the forwarder alone gives
  nothing. Such a grant is carried to the internal function where today's docs let such a
  role have it (`CARRIED`, or what PUBLIC may run), and said either way (`carry_to_internals`).
- *Revocations from PUBLIC* (docs/security.md, "Revoking from PUBLIC"): each privilege PUBLIC
  lacked before the upgrade on an object of ours that existed then (under its name, or in
  schema embeddings before 0.4.0 moved it to embeddings_internal) is taken back again after the
  files granted it (`public_privileges`, `keep_public_revocations`). An object new in the
  release gets the files' grants: its schema's USAGE decides whether PUBLIC reaches it. The
  targets' search functions, made again, then follow search()'s grants (`follow_search_grants`).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass

from psycopg import sql

from worker import queries
from worker.db import Connection

logger = logging.getLogger(__name__)

# Internal functions that docs/sql.md lets a role other than the owner and the worker roles be
# given EXECUTE on, and why: a grant on the forwarder of the same name is carried to them.
CARRIED = {
    "embeddings_internal.target_status(boolean)": (
        "a monitoring role reads embeddings.status with it (docs/sql.md, embeddings.status)"
    ),
}

# Grants on the code to roles other than its owner and the registered worker roles (whose
# grants embeddings.grant_worker() makes again): a monitoring role's SELECT on
# embeddings.status, say. PUBLIC's are kept by keep_public_revocations().
_EXTRA_GRANTS = """
SELECT format('GRANT %%s ON FUNCTION %%s TO %%I%%s',
              a.privilege_type, p.oid::regprocedure, r.rolname,
              CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END),
       'function', p.oid::regprocedure::text, r.rolname
FROM pg_proc p CROSS JOIN LATERAL aclexplode(p.proacl) a JOIN pg_roles r ON r.oid = a.grantee
WHERE ((p.pronamespace = to_regnamespace('embeddings') AND p.proname !~ '^embeddings_[0-9]+_')
       OR p.pronamespace = to_regnamespace('embeddings_internal'))
  AND a.grantee <> p.proowner AND r.rolname <> ALL (%(workers)s)
UNION ALL
SELECT format('GRANT %%s ON %%s TO %%I%%s', a.privilege_type, c.oid::regclass, r.rolname,
              CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END),
       'view', c.oid::regclass::text, r.rolname
FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a JOIN pg_roles r ON r.oid = a.grantee
WHERE c.relnamespace = to_regnamespace('embeddings') AND c.relkind IN ('v', 'm')
  AND a.grantee <> c.relowner AND r.rolname <> ALL (%(workers)s)
ORDER BY 1
"""

# What PUBLIC may do on each object of ours: the schemas, every function (the generated ones
# included), table, view, sequence and column. Each row: the object as a GRANT names it
# ("FUNCTION embeddings.x(integer)"), its column (or NULL), the privileges PUBLIC holds
# (has_*_privilege('public', ...): a column's through its table's too).
_PUBLIC_PRIVILEGES = """
WITH ns AS (SELECT oid, nspname FROM pg_namespace
            WHERE nspname IN ('embeddings', 'embeddings_internal')),
rel AS (SELECT c.oid, c.relkind FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S'))
SELECT 'SCHEMA ' || quote_ident(ns.nspname), NULL::text,
       ARRAY(SELECT p FROM unnest(ARRAY['USAGE', 'CREATE']) p
             WHERE has_schema_privilege('public', ns.oid, p))
FROM ns
UNION ALL
SELECT 'FUNCTION ' || p.oid::regprocedure::text, NULL,
       ARRAY(SELECT 'EXECUTE' WHERE has_function_privilege('public', p.oid, 'EXECUTE'))
FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace
UNION ALL
SELECT 'SEQUENCE ' || rel.oid::regclass::text, NULL,
       ARRAY(SELECT p FROM unnest(ARRAY['USAGE', 'SELECT', 'UPDATE']) p
             WHERE has_sequence_privilege('public', rel.oid, p))
FROM rel WHERE rel.relkind = 'S'
UNION ALL
SELECT 'TABLE ' || rel.oid::regclass::text, NULL,
       ARRAY(SELECT p FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE',
                                        'REFERENCES', 'TRIGGER']) p
             WHERE has_table_privilege('public', rel.oid, p))
FROM rel WHERE rel.relkind <> 'S'
UNION ALL
SELECT 'TABLE ' || rel.oid::regclass::text, quote_ident(a.attname),
       ARRAY(SELECT p FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'REFERENCES']) p
             WHERE has_column_privilege('public', rel.oid, a.attnum, p))
FROM rel JOIN pg_attribute a ON a.attrelid = rel.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE rel.relkind <> 'S'
"""

# An object's key: what a GRANT names, and its column (None for the object itself).
Key = tuple[str, str | None]
PublicPrivileges = dict[Key, frozenset[str]]

# Releases before 0.4.0 kept the internals in schema embeddings: an object of
# embeddings_internal that is new is looked up under that name in what was there before.
_MOVED = re.compile(r"\bembeddings_internal\b")


@dataclass(frozen=True)
class Grant:
    statement: str
    kind: str  # 'function' or 'view'
    identity: str  # regprocedure or regclass text
    grantee: str


def _installed(conn: Connection) -> bool:
    row = conn.execute("SELECT to_regnamespace('embeddings') IS NOT NULL").fetchone()
    return bool(row and row[0])


def extra_grants(conn: Connection) -> list[Grant]:
    """The grants on the code that the files would not make again (see _EXTRA_GRANTS)."""
    if not _installed(conn):
        return []
    workers: list[str] = []
    if conn.execute("SELECT to_regclass('embeddings.worker_roles') IS NOT NULL").fetchone() == (
        True,
    ):
        workers = [r[0] for r in conn.execute("SELECT role_name FROM embeddings.worker_roles")]
    rows = conn.execute(_EXTRA_GRANTS, {"workers": workers}).fetchall()
    return [Grant(*row) for row in rows]


def restore_grants(conn: Connection, grants: list[Grant]) -> None:
    """Makes `grants` again on the objects that still exist under the same identity."""
    for grant in grants:
        check = "to_regprocedure(%s)" if grant.kind == "function" else "to_regclass(%s)"
        row = conn.execute(f"SELECT {check} IS NOT NULL", (grant.identity,)).fetchone()
        if row and row[0]:
            conn.execute(grant.statement)
        else:
            logger.warning("not granted again, %s is gone: %s", grant.identity, grant.statement)


def public_privileges(conn: Connection) -> PublicPrivileges | None:
    """What PUBLIC may do on each object of ours now (None: nothing of ours is installed)."""
    if not _installed(conn):
        return None
    # Names as the installer's path prints them (a type outside pg_catalog qualified), so that
    # the same object reads the same before and after, whatever path the caller had.
    conn.execute(queries.get("installer_path"))
    return {(on, column): frozenset(held) for on, column, held in conn.execute(_PUBLIC_PRIVILEGES)}


def keep_public_revocations(
    conn: Connection, before: PublicPrivileges | None, after: PublicPrivileges
) -> list[str]:
    """Revokes from PUBLIC what it holds now on an object that existed `before` without it;
    one line saying what, or none."""
    if before is None:
        return []  # a fresh install: nothing was revoked
    regained: dict[Key, frozenset[str]] = {}
    for (on, column), held in after.items():
        was = _was(before, on, column)
        if was is not None and held - before[was]:  # None: new in this release, left as made
            regained[on, column] = held - before[was]
    schemas: list[str] = []
    counts: Counter[tuple[str, str]] = Counter()
    for (on, column), privileges in sorted(regained.items(), key=_by_object):
        for privilege in sorted(privileges):
            kind, _, name = on.partition(" ")
            if column is None:
                conn.execute(f"REVOKE {privilege} ON {on} FROM PUBLIC")
                if kind == "SCHEMA":
                    schemas.append(f"{privilege} on schema {name}")
                else:
                    counts[privilege, f"{kind.lower()}s"] += 1
            elif privilege not in regained.get((on, None), ()):  # else the table's took it
                conn.execute(f"REVOKE {privilege} ({column}) ON {on} FROM PUBLIC")
                counts[privilege, "columns"] += 1
    if not schemas and not counts:
        return []
    parts = schemas + [f"{privilege} on {n} {kind}" for (privilege, kind), n in counts.items()]
    return [
        "kept PUBLIC's revocations (it had none of these before the upgrade): " + "; ".join(parts)
    ]


def follow_search_grants(conn: Connection) -> None:
    """Every target's search functions given as search() is now that its grants are back:
    sql/99_regenerate.sql made them while PUBLIC still had search() (the files grant it), so
    they were PUBLIC's, and keep_public_revocations() took that back from any made before; the
    search roles' grants on them (grant_search()'s) went with the functions dropped."""
    conn.execute(
        "SELECT embeddings_internal.follow_search_grants(t) FROM embeddings.targets t"
        " WHERE EXISTS (SELECT FROM pg_catalog.pg_class c"
        " WHERE c.oid OPERATOR(pg_catalog.=) t.source)"
    )


def _by_object(item: tuple[Key, frozenset[str]]) -> tuple[str, str]:
    (on, column), _ = item
    return on, column or ""


def _was(before: PublicPrivileges, on: str, column: str | None) -> Key | None:
    """The key the object had before the upgrade: its own, or its name before the move."""
    for key in ((on, column), (_MOVED.sub("embeddings", on), column)):
        if key in before:
            return key
    return None


def carry_to_internals(
    conn: Connection, grants: list[Grant], files_granted: PublicPrivileges
) -> list[str]:
    """For each grant on a function that is now a forwarder to embeddings_internal: EXECUTE on
    the internal function too, where today's docs let the role have it (CARRIED, or what the
    files grant PUBLIC); otherwise a line saying the grant now gives nothing, and why."""
    lines = []
    for grant in grants:
        if grant.kind != "function" or not grant.identity.startswith("embeddings."):
            continue
        internal = "embeddings_internal." + grant.identity.removeprefix("embeddings.")
        row = conn.execute(
            "SELECT to_regprocedure(%s) IS NOT NULL, to_regprocedure(%s) IS NOT NULL",
            (grant.identity, internal),
        ).fetchone()
        if row != (True, True):
            continue  # gone (restore_grants said so), or no forwarder
        held = conn.execute(
            "SELECT has_function_privilege(%s, %s::regprocedure, 'EXECUTE')",
            (grant.grantee, internal),
        ).fetchone()
        if held == (True,):
            continue
        anyone = "EXECUTE" in files_granted.get((f"FUNCTION {internal}", None), frozenset())
        why = CARRIED.get(internal) or ("anyone may run it (docs/sql.md)" if anyone else None)
        if why is None:
            lines.append(
                f"warning: {grant.grantee}'s EXECUTE on {grant.identity} was kept, but that "
                f"function now forwards to {internal}, which only the schema's owner and worker "
                f"roles may run (docs/sql.md): the grant gives {grant.grantee} nothing now. If "
                f"{grant.grantee} runs a worker, SELECT embeddings.grant_worker('{grant.grantee}')"
            )
            continue
        conn.execute(
            sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(
                sql.SQL(internal), sql.Identifier(grant.grantee)
            )
        )
        lines.append(
            f"carried {grant.grantee}'s EXECUTE on {grant.identity} to {internal}, which it "
            f"now forwards to: {why}"
        )
        lines += _usage_of_internals(conn, grant.grantee)
    return lines


def _usage_of_internals(conn: Connection, role: str) -> list[str]:
    """USAGE on embeddings_internal for a role that holds it on embeddings and may now run an
    internal function by name (`status TABLE` calls target_status() so), where PUBLIC lacks it."""
    row = conn.execute(
        "SELECT has_schema_privilege(%s, 'embeddings', 'USAGE'),"
        " has_schema_privilege(%s, 'embeddings_internal', 'USAGE')",
        (role, role),
    ).fetchone()
    if row != (True, False):
        return []
    conn.execute(
        sql.SQL("GRANT USAGE ON SCHEMA embeddings_internal TO {}").format(sql.Identifier(role))
    )
    return [f"granted {role} USAGE on schema embeddings_internal, as it has on embeddings"]
