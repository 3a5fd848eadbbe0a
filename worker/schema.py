"""The database schema: where its SQL lives, installing it, and migrating with Alembic.

`sql/` holds the current schema as readable SQL files, run in name order (`00_extensions.sql`,
`10_schema.sql`, ...); `sql/uninstall.sql` removes it, whatever revision installed it. The files
hold two kinds of object, installed two ways:

- *state*: the schema, tables, indexes, seed rows, event triggers. Every file is re-runnable over
  an existing install (`CREATE TABLE IF NOT EXISTS`, `ON CONFLICT DO NOTHING`, ...), so a table
  that is new in this release comes from `sql/` alone.
- *code*: functions and views, plain `CREATE`. `reinstall_code` drops all of them (never the
  per-target functions `embeddings_<id>_*` that watch() generated), runs the files, then
  regenerates every target's functions and triggers and every queue's notification trigger. A
  fresh install is the same path over an empty schema.

One Alembic revision per release (`migrations/versions/`), holding only state: code always
comes from `sql/`. `0001` installs the current `sql/` whole into an empty database (a fresh
install is always of this package's release). Each later revision holds its state changes:
`upgrade.sql` (what changed in the tables of the previous release: columns added, conversions,
data moved; idempotent) and `tables.sql` (the tables new in its release, as the release made
them, so that later deltas can rely on them). A database at an older release runs the pending
revisions' state files in order, then the code is reinstalled from `sql/` once
(`finish_upgrade`, called by migrations/env.py). A released revision never changes
(`schema_files`: RELEASED_REVISIONS pins the sha256 of its files). Databases at the revisions
0002-0018 that main carried before release 0.2.0 squashed them are re-stamped as 0001 and
upgraded (upgrade.sql is idempotent). A database at an older release comes from that
release's package or from a dump (tests/migration/fixtures/): this package cannot stop at an
older revision, because it only has the newest code.

A wheel carries `sql/` and `migrations/` inside the package (`worker/_sql`,
`worker/_migrations`), so an installed worker migrates without a checkout.
"""

from __future__ import annotations

import importlib.resources
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import tenacity
from psycopg.sql import Identifier

from worker import exceptions, queries, schema_files, schema_locks
from worker.db import Connection

logger = logging.getLogger(__name__)

VERSION_TABLE = "embed_worker_alembic_version"
# Revisions of main between 0.1.0 and 0.2.0, squashed into 0002 (release 0.2.0). A database at
# one of them is re-stamped as 0001; 0002's upgrade.sql takes any of them to 0.2.0.
SQUASHED_REVISIONS = frozenset(f"{n:04d}" for n in range(2, 19))
# Serialises concurrent `embed-worker migrate` runs (several containers starting at once).
MIGRATION_LOCK_KEY = 0x656D6265  # "embe"


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


def run_files(conn: Connection, files: list[Path]) -> None:
    """Runs each file, as written, after the installer's search path (installer_path): in one
    exchange, whose statements share one transaction (the caller's, or an implicit one), so
    whoever calls this runs sql/ and what it calls (pgmq's functions, which set no path) with
    pg_catalog only."""
    pinned = queries.get("installer_path").encode() + b";\n"
    for path in files:
        logger.debug("running %s", path.name)
        # Bytes: the files are run as written, with no client-side parameter parsing of `%`.
        conn.execute(pinned + path.read_bytes())


def install(conn: Connection) -> None:
    """Installs the whole current schema on `conn` (or reinstalls its code over an existing
    one), inside the caller's transaction."""
    ensure_pgmq(conn)
    reinstall_code(conn, schema_files.install_files())


def reinstall_code(conn: Connection, files: list[Path]) -> None:
    """Drops the schema's functions and views, runs `files`, regenerates what depends on them
    (see the module docstring). Refuses, before dropping anything, when an object of someone
    else's depends on them."""
    from worker import schema_code

    schema_code.refuse_foreign_dependents(conn)
    grants = schema_code.extra_grants(conn)
    schema_code.drop_code(conn)
    run_files(conn, files)  # the last, 99_regenerate.sql, regenerates targets and queues
    schema_code.restore_grants(conn, grants)


def install_initial() -> None:
    """Body of revision 0001's upgrade(): the whole current schema into an empty database. The
    later revisions' state changes are for databases at older releases: they are skipped."""
    _require_head("install")
    conn = revision_connection()
    install(conn)
    _attributes()["installed_fresh"] = True


def upgrade_release(name: str) -> None:
    """Body of a release revision's upgrade(): its state files (`upgrade.sql`, then
    `tables.sql` when the release made tables), the code reinstall left to finish_upgrade."""
    attributes = _attributes()
    if attributes.get("installed_fresh"):
        return
    _require_head("upgrade")
    conn = revision_connection()
    ensure_pgmq(conn)
    folder = schema_files.versions_dir() / name
    run_files(conn, [p for p in (folder / "upgrade.sql", folder / "tables.sql") if p.is_file()])
    attributes["state_changed"] = True


def finish_upgrade(conn: Connection) -> None:
    """After the pending revisions ran (migrations/env.py): the code reinstalled from `sql/`,
    once, when a revision changed state."""
    if _attributes().pop("state_changed", False):
        reinstall_code(conn, schema_files.install_files())


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
            f"{head} ({schema_files.release_of(head)}) only; migrate to head, or use the package "
            "of the release you want"
        )


def use_installer_path(conn: Connection) -> None:
    """The search path of `migrate`'s transaction, before anything of sql/ or a revision runs:
    pg_catalog only, as in our other sessions (queries.sql: installer_path)."""
    conn.execute(queries.get("installer_path"))


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
    down = schema_files.versions_dir() / name / "downgrade.sql"
    if not down.is_file():
        raise exceptions.EmbedWorkerError(
            f"revision {name} cannot be stepped back; downgrade to base removes the schema"
        )
    run_files(revision_connection(), [down])


def uninstall(conn: Connection) -> None:
    """Removes the schema installed by `install` (user data stays)."""
    run_files(conn, [schema_files.sql_dir() / "uninstall.sql"])


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


def _kept(diag: psycopg.errors.Diagnostic) -> bool:
    """NOTICEs worth showing: ours (what was skipped and why), not Postgres' "already exists,
    skipping" of the IF NOT EXISTS statements a reinstall runs over an existing schema."""
    message = diag.message_primary or ""
    return (
        bool(message)
        and not (diag.sqlstate or "").startswith("42")
        and not message.endswith(", skipping")
    )


@contextmanager
def _notices_kept(conn: Connection) -> Iterator[list[str]]:
    notices: list[str] = []

    def keep(diag: psycopg.errors.Diagnostic) -> None:
        if _kept(diag) and diag.message_primary:
            notices.append(diag.message_primary)
            logger.debug("%s", diag.message_primary)

    conn.add_notice_handler(keep)
    try:
        yield notices
    finally:
        conn.remove_notice_handler(keep)


@dataclass
class Migration:
    """What `migrate` did: the revisions applied in order, and where the database is now."""

    applied: list[str] = field(default_factory=list)
    current: str | None = None
    restamped_from: str | None = None
    notices: list[str] = field(default_factory=list)  # in order, each once

    def lines(self) -> list[str]:
        """One line per revision applied (or where the database is), then the NOTICEs."""
        out = []
        if self.restamped_from:
            out.append(
                f"re-stamped {self.restamped_from} (a revision of main before 0.2.0) as 0001"
            )
        out += [f"applied {rev} ({schema_files.release_of(rev)})" for rev in self.applied]
        if not self.applied:
            out.append(f"already at {self.current} ({schema_files.release_of(self.current)})")
        return out + [f"notice: {n}" for n in self.notices]


def _run_alembic(
    dsn: str,
    action: Callable[..., None],
    *args: str,
    lock_wait: float = schema_locks.WAIT_SECONDS,
) -> Migration:
    """`action` in one transaction, tried again with backoff while the tables it locks first
    are in use (worker/schema_locks.py), for up to `lock_wait` seconds."""
    retrying = tenacity.Retrying(
        wait=schema_locks.RETRY,
        retry=tenacity.retry_if_exception_type(schema_locks.LocksBusy),
        stop=tenacity.stop_before_delay(lock_wait),  # no sleep that would pass the deadline
        before_sleep=_log_busy,
        reraise=True,
    )
    try:
        return retrying(_run_alembic_once, dsn, action, *args)
    except schema_locks.LocksBusy as exc:
        tries = retrying.statistics.get("attempt_number", 1)
        held = "; ".join(schema_locks.holders(dsn, MIGRATION_LOCK_KEY))
        held = held or "no session holds them now"
        raise schema_locks.LocksBusy(
            f"migrate could not lock the tables it changes within {lock_wait:g} s "
            f"({tries} tries; {exc}): {held}. Nothing was changed. End those "
            "transactions, or wait longer with `migrate --lock-wait SECONDS`"
        ) from None


def _log_busy(state: tenacity.RetryCallState) -> None:
    outcome = state.outcome
    delay = state.next_action.sleep if state.next_action else 0.0
    logger.info("%s; trying again in %.1f s", outcome.exception() if outcome else "", delay)


def _run_alembic_once(dsn: str, action: Callable[..., None], *args: str) -> Migration:
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    config = schema_files.alembic_config()
    result = Migration()
    engine = create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(dsn), poolclass=NullPool
    )
    alembic_log = logging.getLogger("alembic")
    level = alembic_log.level
    alembic_log.setLevel(logging.WARNING)  # `migrate` says what it applied itself
    try:
        with engine.begin() as connection:
            driver = connection.connection.driver_connection
            assert isinstance(driver, psycopg.Connection)
            with _notices_kept(driver) as notices:
                config.attributes["connection"] = connection
                config.attributes["migration"] = result
                action(config, *args)
            result.current = current_revision(driver)
    finally:
        alembic_log.setLevel(level)
        engine.dispose()
    result.notices = list(dict.fromkeys(notices))
    return result


def on_version_apply(migration: Migration | None, step: Any) -> None:
    """Alembic's callback after each step (migrations/env.py): records the revision applied."""
    if migration is not None and step.is_upgrade:
        migration.applied.append(str(step.up_revision_id))


def migrate(
    dsn: str, revision: str = "head", *, lock_wait: float = schema_locks.WAIT_SECONDS
) -> Migration:
    """Alembic upgrade to `revision`: what was applied, and the server's NOTICEs (what was
    skipped). Waits up to `lock_wait` seconds for the tables it changes to be free."""
    from alembic import command

    return _run_alembic(dsn, command.upgrade, revision, lock_wait=lock_wait)


def downgrade(dsn: str, revision: str = "base") -> Migration:
    from alembic import command

    return _run_alembic(dsn, command.downgrade, revision)


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

    head = ScriptDirectory.from_config(schema_files.alembic_config()).get_current_head()
    assert head is not None
    return str(head)


def mismatch(conn: Connection) -> str | None:
    """Why this package's worker cannot serve the database's schema (None: it can). A schema
    of an older release lacks what today's code calls: it must be migrated first. A schema
    newer than this package was migrated by a later release, whose worker replaces this one."""
    from alembic.script import ScriptDirectory

    head = head_revision()
    mine = f"release {schema_files.release_of(head)} (revision {head})"
    upgrade = (
        f"run `embed-worker migrate` of {mine} to upgrade it (docs/upgrading.md); the worker "
        "of the older release keeps serving meanwhile"
    )
    row = conn.execute(queries.get("schema_revision_defined")).fetchone()
    if not row or not row[0]:
        return f"the database's schema is of an older release than this worker's: {upgrade}"
    try:
        found = conn.execute(queries.get("schema_revision")).fetchone()
    except psycopg.errors.InsufficientPrivilege:
        # A role that is not a worker role (grant_worker()) cannot tell: the checks of what
        # it runs later say what it lacks.
        return None
    at = found[0] if found else None
    if at is None or at == head:
        return None  # (no Alembic record: installed by hand or restored without it; served as is)
    script = ScriptDirectory.from_config(schema_files.alembic_config())
    if at in {s.revision for s in script.walk_revisions()} or at in SQUASHED_REVISIONS:
        return (
            f"the database's schema is release {schema_files.release_of(at)} (revision {at}), "
            f"older than this worker's: {upgrade}"
        )
    return (
        f"the database's schema is at revision {at}, newer than this worker ({mine}): a later "
        "release migrated it; replace this worker with that release's (docs/upgrading.md)"
    )


def _version_table() -> Identifier:
    return Identifier("public", VERSION_TABLE)
