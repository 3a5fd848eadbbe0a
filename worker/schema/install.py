"""Installing the schema: sql/'s files run with the installer's search path, pgmq ensured,
and the code reinstall (functions and views dropped, the files run: `code`; grants and
revocations kept: `privileges`)."""

from __future__ import annotations

import importlib.resources
import logging
from pathlib import Path

import psycopg

from worker import exceptions, queries
from worker.db import Connection
from worker.schema import code, files, kept, privileges

logger = logging.getLogger(__name__)


def bundled_pgmq_sql() -> str:
    """The pgmq SQL shipped in the `pgmq` PyPI package (for servers without the extension)."""
    return (importlib.resources.files("pgmq") / "sql" / "pgmq.sql").read_text(encoding="utf-8")


def ensure_pgmq(conn: Connection) -> None:
    """pgmq as an extension when the server offers it, else as plain SQL from the pgmq package."""
    row = conn.execute(queries.get("pgmq_state")).fetchone()
    assert row is not None
    present, available = row
    if present:
        return
    if available:
        conn.execute(queries.get("create_pgmq"))
        return
    logger.warning("pgmq extension not available on this server: installing its SQL as plain SQL")
    conn.execute(bundled_pgmq_sql().encode())


def run_files(conn: Connection, paths: list[Path]) -> None:
    """Runs each file, as written, after the installer's search path (installer_path): in one
    exchange, whose statements share one transaction (the caller's, or an implicit one), so
    whoever calls this runs sql/ and what it calls (pgmq's functions, which set no path) with
    pg_catalog only."""
    pinned = queries.get("installer_path").encode() + b";\n"
    for path in paths:
        logger.debug("running %s", path.name)
        # Bytes: the files are run as written, with no client-side parameter parsing of `%`.
        conn.execute(pinned + path.read_bytes())


def install(conn: Connection) -> None:
    """Installs the whole current schema on `conn` (or reinstalls its code over an existing
    one), inside the caller's transaction."""
    ensure_pgmq(conn)
    reinstall_code(conn, files.install_files())


def reinstall_code(
    conn: Connection,
    paths: list[Path],
    public_before: privileges.PublicPrivileges | None = None,
) -> list[str]:
    """Drops the schema's functions and views, runs `paths`, regenerates what depends on them
    (see the module docstring), and keeps what others were granted or denied on them
    (`privileges`): lines saying what it kept or could not. Refuses, before dropping anything,
    when an object of someone else's depends on them. Functions, views and types of the user's
    in our schemas are kept (`kept`). `public_before`: what PUBLIC held before
    the upgrade began (before the revisions' state files granted anything), else now."""
    code.refuse_foreign_dependents(conn)
    code.refuse_short_lock_table(conn)
    if public_before is None:
        public_before = privileges.public_privileges(conn)
    theirs = kept.set_aside(conn)
    named_ours = kept.named_ours(conn)
    grants = privileges.extra_grants(conn)
    code.drop_code(conn)
    run_files(conn, paths)  # the last, 99_regenerate.sql, regenerates targets and queues
    kept.refuse_dropped_overloads(conn, named_ours)
    kept.put_back(conn, theirs)
    privileges.restore_grants(conn, grants)
    files_granted = privileges.public_privileges(conn) or {}
    lines = privileges.keep_public_revocations(conn, public_before, files_granted)
    privileges.follow_search_grants(conn)
    return lines + privileges.carry_to_internals(conn, grants, files_granted)


def use_installer_path(conn: Connection) -> None:
    """The search path of `migrate`'s transaction, before anything of sql/ or a revision runs:
    pg_catalog only, as in our other sessions (queries.sql: installer_path)."""
    conn.execute(queries.get("installer_path"))


def uninstall(conn: Connection) -> None:
    """Removes the schema installed by `install` (user data stays). Raises EmbedWorkerError,
    naming them, when objects not ours are in our schemas or depend on them (uninstall.sql
    refuses to drop the latter along; the caller's transaction undoes the rest)."""
    with conn.transaction():  # (a savepoint in the caller's; the path is for this one alone)
        use_installer_path(conn)  # first: no schema of a tenant's on the caller's path is searched
        refuse_foreign_objects(conn)
    try:
        run_files(conn, [files.sql_dir() / "uninstall.sql"])
    except psycopg.errors.DependentObjectsStillExist as exc:
        diag = exc.diag
        raise exceptions.EmbedWorkerError(f"{diag.message_primary}\n{diag.message_hint}") from None


def refuse_foreign_objects(conn: Connection) -> None:
    """Raises EmbedWorkerError before anything is dropped when schema embeddings or
    embeddings_internal holds objects our SQL does not name (a user's view or table made in
    it): DROP SCHEMA ... CASCADE would take them along without a word. Names each, with the
    statement that moves it out."""
    ours = files.our_names()
    foreign = [
        (word, quoted, described)
        for name, word, quoted, described in conn.execute(queries.get("objects_in_our_schemas"))
        if name not in ours
    ]
    if not foreign:
        return
    listed = "\n".join(f"  {described}" for _, _, described in foreign)
    moves = "\n".join(f"  ALTER {word} {quoted} SET SCHEMA public;" for word, quoted, _ in foreign)
    raise exceptions.EmbedWorkerError(
        "cannot remove the embeddings schema: these objects in it are not embed-worker's, and "
        f"would be dropped with it:\n{listed}\nMove them to a schema of yours first, e.g.:\n"
        f"{moves}\nthen downgrade again; nothing was changed"
    )
