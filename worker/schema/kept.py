"""The user's own functions, views and composite types in schemas embeddings and
embeddings_internal, kept across the code reinstall (worker/schema/install.py: reinstall_code).

Ours are what our SQL of some release names (files.our_names) and the functions watch()
generates; the rest of those kinds someone made there, and `migrate` dropped them with the
code at every run. They are set aside in a schema of their own for the reinstall, so that the
files' sweeps over our schemas (grants, comments, "nothing but the API in embeddings") see ours
only, and put back after it, in the same transaction. A function of theirs that bears one of our
names, with arguments no release of ours had, goes with the code: the reinstall refuses then,
naming it (refuse_dropped_overloads).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg.sql import SQL, Identifier

from worker import exceptions
from worker.db import Connection
from worker.schema import files

# Theirs: functions, views and composite types in our schemas that neither our SQL names nor
# watch() generated, nor an extension owns; what ALTER <word> moves each, its oid and schema.
_THEIRS = """
SELECT CASE p.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END,
       p.oid, n.nspname::text
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname IN ('embeddings', 'embeddings_internal')
  AND p.proname !~ '^embeddings_[0-9]+_' AND p.proname <> ALL (%(ours)s)
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                  AND d.objid = p.oid AND d.deptype = 'e')
UNION ALL
SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TYPE' END,
       c.oid, n.nspname::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname IN ('embeddings', 'embeddings_internal')
  AND c.relkind IN ('v', 'm', 'c') AND c.relname <> ALL (%(ours)s)
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 3, 1, 2
"""

# An object of _THEIRS as ALTER names it now, and its owner.
_NAMED = """
SELECT CASE WHEN %(word)s IN ('FUNCTION', 'PROCEDURE', 'AGGREGATE')
            THEN (SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.oid = %(oid)s)
            WHEN %(word)s = 'TYPE'
            THEN (SELECT c.reltype::regtype::text FROM pg_class c WHERE c.oid = %(oid)s)
            ELSE %(oid)s::oid::regclass::text END,
       CASE WHEN %(word)s IN ('FUNCTION', 'PROCEDURE', 'AGGREGATE')
            THEN (SELECT p.proowner::regrole::text FROM pg_proc p WHERE p.oid = %(oid)s)
            ELSE (SELECT c.relowner::regrole::text FROM pg_class c WHERE c.oid = %(oid)s) END
"""

# Functions of our schemas with one of our names, by signature (files.signature).
_NAMED_OURS = """
SELECT p.oid::regprocedure::text FROM pg_proc p
WHERE p.pronamespace IN (to_regnamespace('embeddings'), to_regnamespace('embeddings_internal'))
  AND p.proname !~ '^embeddings_[0-9]+_' AND p.proname = ANY (%(ours)s)
"""


@dataclass(frozen=True)
class Theirs:
    """What set_aside moved: ALTER's word, the object's oid and the schema it came from."""

    holding: str
    objects: list[tuple[str, int, str]]


def _named(conn: Connection, word: str, oid: int) -> tuple[str, str]:
    row = conn.execute(_NAMED, {"word": word, "oid": oid}).fetchone()
    assert row is not None
    return row[0], row[1]


def set_aside(conn: Connection) -> Theirs | None:
    """Moves their functions, views and types out of our schemas into a schema of their own;
    None when there are none. Raises EmbedWorkerError, naming it, for one the caller may not
    move (another role's, and the caller is no superuser)."""
    if conn.execute("SELECT to_regnamespace('embeddings') IS NULL").fetchone() == (True,):
        return None
    objects = conn.execute(_THEIRS, {"ours": sorted(files.our_names())}).fetchall()
    if not objects:
        return None
    row = conn.execute("SELECT 'embeddings_kept_' || pg_backend_pid()").fetchone()
    assert row is not None
    holding = str(row[0])
    conn.execute(SQL("CREATE SCHEMA {}").format(Identifier(holding)))
    for word, oid, _ in objects:
        named, owner = _named(conn, word, oid)
        try:
            conn.execute(SQL(f"ALTER {word} {named} SET SCHEMA {{}}").format(Identifier(holding)))
        except psycopg.errors.InsufficientPrivilege:
            raise exceptions.EmbedWorkerError(
                f"cannot upgrade the embeddings schema: {word.lower()} {named} is not "
                f"embed-worker's, and migrate keeps it by moving it aside while it replaces its "
                f"own code, which only its owner ({owner}) or a superuser may do. Run migrate as "
                f"a superuser, or move it to a schema of yours first:\n"
                f"  ALTER {word} {named} SET SCHEMA public;\nnothing was changed"
            ) from None
    return Theirs(holding, [(word, oid, schema) for word, oid, schema in objects])


def put_back(conn: Connection, theirs: Theirs | None) -> None:
    """Moves what set_aside moved back where it was, and drops the holding schema."""
    if theirs is None:
        return
    for word, oid, schema in theirs.objects:
        named, _ = _named(conn, word, oid)
        conn.execute(SQL(f"ALTER {word} {named} SET SCHEMA {{}}").format(Identifier(schema)))
    conn.execute(SQL("DROP SCHEMA {}").format(Identifier(theirs.holding)))


def named_ours(conn: Connection) -> list[str]:
    """The functions in our schemas that bear one of our names, before the reinstall drops them."""
    if conn.execute("SELECT to_regnamespace('embeddings') IS NULL").fetchone() == (True,):
        return []
    return [r[0] for r in conn.execute(_NAMED_OURS, {"ours": sorted(files.our_names())})]


def refuse_dropped_overloads(conn: Connection, before: list[str]) -> None:
    """Raises EmbedWorkerError, naming them, for the functions of `before` (named_ours) that no
    release of ours had: the user's, under one of our names, which the reinstall dropped (the
    caller's transaction undoes it)."""
    now = conn.execute(_NAMED_OURS, {"ours": sorted(files.our_names())}).fetchall()
    ours = {files.signature(r[0]) for r in now} | files.older_functions()
    theirs = [f for f in before if files.signature(f) not in ours]
    if not theirs:
        return
    listed = "\n".join(f"  function {f}" for f in theirs)
    moves = "\n".join(f"  ALTER FUNCTION {f} SET SCHEMA public;" for f in theirs)
    raise exceptions.EmbedWorkerError(
        "cannot upgrade the embeddings schema: these functions in it are not embed-worker's, "
        f"yet bear the names of its own, whose code migrate replaces:\n{listed}\n"
        f"Move them to a schema of yours first (and rename them there if you like), e.g.:\n"
        f"{moves}\nthen migrate again; nothing was changed"
    )
