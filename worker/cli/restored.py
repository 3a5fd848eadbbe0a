"""`doctor`'s checks of what a restore or an administrator left behind: a schema of ours under
another name, a schema whose revision Alembic has no record of, triggers or policies named
as a target's on a table that is not that target's (a table dumped alone and restored into
another database), and side or chunk tables whose row-level security hides every row."""

from __future__ import annotations

import psycopg

from worker import db, queries, schema
from worker.cli.findings import Finding


def renamed_schemas(conn: db.Connection) -> list[Finding]:
    """A schema of ours, or pgmq's, renamed where no event trigger refused it: every write to a
    watched table (pgmq's: every read of the queues) fails until it has its name back."""
    out = []
    for found, wanted, quoted in conn.execute(queries.get("renamed_schemas")).fetchall():
        if wanted == "pgmq":
            detail = (
                f"pgmq's schema, which holds embed-worker's queues, is named {found}: the "
                "worker, sweep() and status fail on every queue, since our code and pgmq's "
                "own name it pgmq"
            )
        else:
            detail = (
                f"a schema holding embed-worker's tables or functions is named {found}: every "
                f"write to a watched table fails, since our code names it {wanted}"
            )
        fix = f"rename it back: ALTER SCHEMA {quoted} RENAME TO {wanted}"
        out.append(Finding("FAIL", "schema", detail, fix))
    return out


def unrecorded(conn: db.Connection) -> Finding | None:
    """An older schema without Alembic's record: the statements `migrate`'s refusal gives."""
    try:
        with conn.transaction():
            found = schema.unrecorded(conn)
    except psycopg.errors.InsufficientPrivilege:
        return None
    return None if found is None else Finding("FAIL", "schema", found.found, found.fix)


def strays(conn: db.Connection) -> list[Finding]:
    """Each trigger or policy named as a target's on a table that is not its target's."""
    out = []
    for kind, name, table, target_id, source, quoted in conn.execute(
        queries.get("stray_objects")
    ).fetchall():
        whose = (
            f"target {target_id}, which watches {source}"
            if source
            else f"target {target_id}, which does not exist here"
        )
        drop = f"DROP {kind.upper()} {quoted} ON {table}"
        if kind == "trigger":
            does = "it does nothing"
            fix = f"watch {table} again (embeddings.watch() drops such triggers), or {drop}"
        else:
            does = "it shows this table's rows by another table's rows"
            fix = (
                f"watch the table this one serves again (embeddings.watch() drops such "
                f"policies on its store), or {drop}"
            )
        out.append(
            Finding(
                "FAIL",
                f"{kind} {name} on {table}",
                f"named as {whose}, not this table (restored from another database?): {does}",
                fix,
            )
        )
    return out


def stores_without_policy(conn: db.Connection) -> list[Finding]:
    """A side or chunk table with row-level security on and no policy: its rows are its
    owner's only, so search finds none of them."""
    out = []
    for table, target_id, source in conn.execute(queries.get("stores_without_policy")).fetchall():
        if target_id is not None:
            out.append(
                Finding(
                    "FAIL",
                    f"store {table}",
                    f"the store of target {target_id} ({source}) has row-level security on and "
                    "no policy: search, which reads it with the searcher's rights, finds none "
                    "of its rows",
                    f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY: any ALTER TABLE of it "
                    "makes its policy again (embed-worker's event trigger follows it; a "
                    "superuser's `migrate` installs that)",
                )
            )
        else:
            out.append(
                Finding(
                    "warn",
                    f"store {table}",
                    "made by embed-worker as a side or chunk table in another database and "
                    "restored here without its policy (it named that database's visibility "
                    "function): row-level security is on, so only its owner sees its rows; no "
                    "target here uses it",
                    f"DROP TABLE {table}, then watch the table it served (embeddings.watch() "
                    "makes its store again and embeds its rows again); or, to keep it as a "
                    f"table of your own, ALTER TABLE {table} DISABLE ROW LEVEL SECURITY",
                )
            )
    return out
