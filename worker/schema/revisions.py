"""Revisions: what a release revision's upgrade() and downgrade() run (`install_initial`,
`upgrade_release`, `downgrade_revision`, both as `release_steps`; the code reinstalled once after
them, `finish_upgrade`),
and which revision a database is at, against the one this package needs (`mismatch`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.sql import Identifier

from worker import exceptions, queries
from worker.db import Connection
from worker.schema import files, privileges
from worker.schema.install import ensure_pgmq, install, reinstall_code, run_files

logger = logging.getLogger(__name__)

VERSION_TABLE = "embed_worker_alembic_version"
# Revisions of main between 0.1.0 and 0.2.0, squashed into 0002 (release 0.2.0). A database at
# one of them is re-stamped as 0001; 0002's upgrade.sql takes any of them to 0.2.0.
SQUASHED_REVISIONS = frozenset(f"{n:04d}" for n in range(2, 19))


def install_initial() -> None:
    """Body of revision 0001's upgrade(): the whole current schema into an empty database. The
    later revisions' state changes are for databases at older releases: they are skipped."""
    _require_head("install")
    conn = revision_connection()
    _refuse_unrecorded_older_schema(conn)
    install(conn)
    _attributes()["installed_fresh"] = True


def _refuse_unrecorded_older_schema(conn: Connection) -> None:
    """Alembic finds no revision recorded, yet the schema is installed: a schema of this
    release is installed over, as a reinstall; an older one would get this release's code over
    its tables (the upgrade failed on the first column it lacked): EmbedWorkerError, saying
    which revision to record, and how (`unrecorded`)."""
    if not installed(conn):
        return
    found = unrecorded(conn)
    if found is not None:
        raise exceptions.EmbedWorkerError(f"{found.found}. {found.fix}\nNothing was changed")


def unrecorded(conn: Connection) -> Mismatch | None:
    """The installed schema is older than this release's and Alembic's record of its revision
    is missing (installed by hand, or restored without the table: `pg_dump -n embeddings` leaves
    it out): what it is, and the statements that record its revision, which `migrate` then
    upgrades from; `migrate` refuses with them, `doctor` gives them. None: recorded, or of this
    release. For a role that may not read the record: None (the record is there)."""
    table = f"public.{VERSION_TABLE}"
    try:
        if current_revision(conn) is not None:
            return None
    except psycopg.errors.InsufficientPrivilege:
        return None
    row = conn.execute(queries.get("installed_schema_revision")).fetchone()
    at = str(row[0]) if row else "0001"
    if at == head_revision():
        return None
    return Mismatch(
        f"the embeddings schema is installed, but {table}, where migrate records its "
        "revision, is missing or empty: the schema was installed by hand, or restored without "
        f"that table (pg_dump -n embeddings leaves it out). Its tables are release "
        f"{files.release_of(at)}'s (revision {at})",
        "Restore that table with the schema, or record the revision as the schema's owner, "
        "then migrate again:\n"
        f"  CREATE TABLE IF NOT EXISTS {table} (version_num varchar(32) PRIMARY KEY);\n"
        f"  INSERT INTO {table} VALUES ('{at}');",
    )


def upgrade_release(name: str) -> None:
    """Body of a release revision's upgrade(): its state files (`upgrade.sql`, then
    `tables.sql` when the release made tables), the code reinstall left to finish_upgrade."""
    attributes = _attributes()
    if attributes.get("installed_fresh"):
        return
    _require_head("upgrade")
    conn = revision_connection()
    if "public_before" not in attributes:  # before any state file grants anything
        attributes["public_before"] = privileges.public_privileges(conn)
    ensure_pgmq(conn)
    folder = files.versions_dir() / name
    run_files(conn, [p for p in (folder / "upgrade.sql", folder / "tables.sql") if p.is_file()])
    attributes["state_changed"] = True


def release_steps(module_file: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """A release revision's upgrade() and downgrade(), for its module (`__file__`): its state
    files are in the folder named as the module (`upgrade_release`, `downgrade_revision`)."""
    name = Path(module_file).stem

    def upgrade() -> None:
        upgrade_release(name)

    def downgrade() -> None:
        downgrade_revision(name)

    return upgrade, downgrade


def finish_upgrade(conn: Connection) -> None:
    """After the pending revisions ran (migrations/env.py): the code reinstalled from `sql/`,
    once, when a revision changed state; what it kept of others' rights goes in the result
    `migrate` prints."""
    attributes = _attributes()
    if attributes.pop("state_changed", False):
        kept = reinstall_code(conn, files.install_files(), attributes.pop("public_before", None))
        migration = attributes.get("migration")
        if migration is not None:
            migration.kept += kept
        for line in kept:
            logger.debug("%s", line)


def _attributes() -> dict[str, Any]:
    from alembic import context

    attributes: dict[str, Any] = context.config.attributes
    return attributes


def _require_head(what: str) -> None:
    """This package has only the newest code: a database stopped at an older revision would
    hold that revision's tables under newer code."""
    from alembic import context
    from alembic.script import ScriptDirectory

    wanted = context.get_revision_argument()
    head = ScriptDirectory.from_config(context.config).get_current_head()
    if wanted not in ("head", "heads", head):
        raise exceptions.EmbedWorkerError(
            f"cannot {what} at revision {wanted}: this package installs the code of revision "
            f"{head} ({files.release_of(head)}) only; migrate to head, or use the package "
            "of the release you want"
        )


def revision_connection() -> Connection:
    """The psycopg connection under the Alembic operation context (inside a revision)."""
    from alembic import op

    conn = op.get_bind().connection.driver_connection
    assert isinstance(conn, psycopg.Connection)
    return conn


def downgrade_revision(name: str) -> None:
    """Body of a revision's downgrade() (after 0001). Going down to base, nothing: revision
    0001's downgrade runs sql/uninstall.sql, which removes the schema of any revision. One step
    down runs `<name>/downgrade.sql`; a revision without one cannot be stepped back (restore a
    backup, or downgrade to base and migrate again)."""
    from alembic import context

    if context.get_revision_argument() in (None, "base"):
        return
    down = files.versions_dir() / name / "downgrade.sql"
    if not down.is_file():
        raise exceptions.EmbedWorkerError(
            f"revision {name} cannot be stepped back; downgrade to base removes the schema"
        )
    run_files(revision_connection(), [down])


def restamp_squashed(conn: Connection) -> str | None:
    """A database at one of the SQUASHED_REVISIONS is marked as at 0001, whence 0002 upgrades
    it; returns the revision it was at. The 0002 of main before the squash is told from the
    release's by its schema: it still had `targets.key_column` (its 0003 dropped it)."""
    at = current_revision(conn)
    if at not in SQUASHED_REVISIONS:
        return None
    if at == "0002":
        row = conn.execute(queries.get("targets_have_key_column")).fetchone()
        if not row or not row[0]:
            return None
    conn.execute(queries.compose("restamp_0001", version_table=_version_table()))
    logger.debug("re-stamped revision %s as 0001", at)
    return at


def installed(conn: Connection) -> bool:
    """Whether the embeddings schema is installed in the database of `conn`."""
    row = conn.execute(queries.get("schema_installed")).fetchone()
    return bool(row and row[0])


def current_revision(conn: Connection) -> str | None:
    row = conn.execute(
        queries.get("version_table_exists"), {"version_table": f"public.{VERSION_TABLE}"}
    ).fetchone()
    if not row or not row[0]:
        return None
    version = conn.execute(
        queries.compose("current_revision", version_table=_version_table())
    ).fetchone()
    return str(version[0]) if version else None


def head_revision() -> str:
    """The revision whose schema this package's code needs: the newest it carries."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(files.alembic_config()).get_current_head()
    assert head is not None
    return str(head)


@dataclass(frozen=True)
class Mismatch:
    """Why this package cannot serve the database's schema: what the schema is (`found`) and
    what to do (`fix`); as one line, `found: fix`. `newer`: migrated by a later release."""

    found: str
    fix: str
    newer: bool = False

    def __str__(self) -> str:
        return f"{self.found}: {self.fix}"


def mismatch(conn: Connection, *, migrate: str = "embed-worker migrate") -> Mismatch | None:
    """Why this package's worker and commands cannot serve the database's schema (None: they
    can). A schema of an older release lacks what today's code calls: it must be migrated
    first (`migrate`: the command to say, as it would be pasted). A schema newer than this
    package was migrated by a later release, whose worker and commands replace these. One
    look at the catalog, and one call of the schema's revision function where it has one."""
    head = head_revision()
    mine = f"release {files.release_of(head)} (revision {head})"
    upgrade = (
        f"run `{migrate}` of {mine} to upgrade it (docs/upgrading.md); the worker "
        "of the older release keeps serving meanwhile"
    )
    where, at = _recorded_revision(conn)
    if where == "internal" and at in (None, head):
        # (None: no Alembic record, installed by hand or restored without it, served as is;
        # or a role that is not a worker role, which cannot tell: the checks of what it runs
        # later say what it lacks)
        return None
    if at not in (None, head) and at not in SQUASHED_REVISIONS and known_revision(at):
        return Mismatch(
            f"the database's schema is release {files.release_of(at)} (revision {at}), "
            "older than this worker's",
            upgrade,
        )
    if where == "internal" and at is not None and not known_revision(at):
        return Mismatch(
            f"the database's schema is at revision {at}, newer than this worker ({mine})",
            "a later release migrated it; use that release's embed-worker (its worker and its "
            "commands) in place of this one (docs/upgrading.md)",
            newer=True,
        )
    # Without this release's revision function (0.2.0 recorded none for worker roles; 0.3.0
    # kept its own in schema embeddings), or at a revision of main squashed into 0.2.0.
    return Mismatch("the database's schema is of an older release than this worker's", upgrade)


def _recorded_revision(conn: Connection) -> tuple[str | None, str | None]:
    """Where the schema's revision function is ('internal', '0.3.0' or None: see the query
    schema_revision_defined), and the revision it says (None: none recorded, no function, or
    this role may not run it)."""
    row = conn.execute(queries.get("schema_revision_defined")).fetchone()
    where = row[0] if row else None
    if where is None:
        return None, None
    try:
        found = conn.execute(
            queries.get("schema_revision" if where == "internal" else "schema_revision_0_3_0")
        ).fetchone()
    except psycopg.errors.InsufficientPrivilege:
        return where, None
    return where, (found[0] if found else None)


def known_revision(at: str) -> bool:
    """Whether revision `at` is one this package knows (its own, an older release's, or one of
    main's squashed into 0.2.0): not one a later release made."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(files.alembic_config())
    return at in {s.revision for s in script.walk_revisions()} or at in SQUASHED_REVISIONS


def _version_table() -> Identifier:
    return Identifier("public", VERSION_TABLE)
