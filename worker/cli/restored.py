"""`doctor`'s checks of what a restore or an administrator left behind: a schema of ours under
another name, a schema whose revision Alembic has no record of, and triggers or policies named
as a target's on a table that is not that target's (a table dumped alone and restored into
another database)."""

from __future__ import annotations

import psycopg

from worker import db, queries, schema
from worker.cli.findings import Finding


def renamed_schemas(conn: db.Connection) -> list[Finding]:
    """A schema of ours renamed where no event trigger refused it: every write to a watched
    table fails until it has its name back."""
    return [
        Finding(
            "FAIL",
            "schema",
            f"a schema holding embed-worker's tables or functions is named {found}: every "
            f"write to a watched table fails, since our code names it {wanted}",
            f"rename it back: ALTER SCHEMA {quoted} RENAME TO {wanted}",
        )
        for found, wanted, quoted in conn.execute(queries.get("renamed_schemas")).fetchall()
    ]


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
            does = "it shows or hides this table's rows by another table's rows"
            fix = f"{drop}, then watch the table this one serves again"
        out.append(
            Finding(
                "FAIL",
                f"{kind} {name} on {table}",
                f"named as {whose}, not this table (restored from another database?): {does}",
                fix,
            )
        )
    return out
