"""`migrate` and `downgrade`: Alembic run in one transaction on a psycopg connection, tried
again while the tables it locks first are busy (`locks`), reporting what it applied and the
server's NOTICEs worth showing."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import tenacity

from worker import db, exceptions
from worker.db import Connection
from worker.schema import files, locks
from worker.schema.revisions import current_revision, head_revision, known_revision

logger = logging.getLogger(__name__)

# Serialises concurrent `embed-worker migrate` runs (several containers starting at once).
MIGRATION_LOCK_KEY = 0x656D6265  # "embe"


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
    kept: list[str] = field(default_factory=list)  # others' rights kept (schema.privileges)

    def lines(self) -> list[str]:
        """One line per revision applied (or where the database is), what the upgrade kept of
        others' rights, then the NOTICEs."""
        out = []
        if self.restamped_from:
            out.append(
                f"re-stamped {self.restamped_from} (a revision of main before 0.2.0) as 0001"
            )
        out += [f"applied {rev} ({files.release_of(rev)})" for rev in self.applied]
        if not self.applied:
            out.append(f"already at {self.current} ({files.release_of(self.current)})")
        return out + self.kept + [f"notice: {n}" for n in self.notices]


def _run_alembic(
    dsn: str,
    action: Callable[..., None],
    *args: str,
    lock_wait: float = locks.WAIT_SECONDS,
) -> Migration:
    """`action` in one transaction, tried again with backoff while the tables it locks first
    are in use (worker/locks.py), for up to `lock_wait` seconds."""
    _refuse_newer(dsn)
    retrying = tenacity.Retrying(
        wait=locks.RETRY,
        retry=tenacity.retry_if_exception_type(locks.LocksBusy),
        stop=tenacity.stop_before_delay(lock_wait),  # no sleep that would pass the deadline
        before_sleep=_log_busy,
        reraise=True,
    )
    try:
        return retrying(_run_alembic_once, dsn, action, *args)
    except locks.LocksBusy as exc:
        tries = retrying.statistics.get("attempt_number", 1)
        held = "; ".join(locks.holders(dsn, MIGRATION_LOCK_KEY))
        held = held or "no session holds them now"
        raise locks.LocksBusy(
            f"migrate could not lock the tables it changes within {lock_wait:g} s "
            f"({tries} tries; {exc}): {held}. Nothing was changed. End those "
            "transactions, or wait longer with `migrate --lock-wait SECONDS`"
        ) from None


def _refuse_newer(dsn: str) -> None:
    """A database a later release migrated is that release's to migrate (Alembic said only
    "Can't locate revision identified by '0021'")."""
    with db.connect(dsn) as conn:
        at = current_revision(conn)
    if at is None or known_revision(at):
        return
    head = head_revision()
    raise exceptions.SchemaMismatch(
        f"the database's schema is at revision {at}, newer than this package (release "
        f"{files.release_of(head)}, revision {head}): a later release migrated it; use that "
        "release's embed-worker (its migrate, its worker) in place of this one "
        "(docs/upgrading.md)"
    )


def _log_busy(state: tenacity.RetryCallState) -> None:
    outcome = state.outcome
    delay = state.next_action.sleep if state.next_action else 0.0
    logger.info("%s; trying again in %.1f s", outcome.exception() if outcome else "", delay)


def _run_alembic_once(dsn: str, action: Callable[..., None], *args: str) -> Migration:
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    config = files.alembic_config()
    result = Migration()
    # READ COMMITTED, whatever the database's default: the migration runs beside workers and
    # applications, and its statements, like ours everywhere, are written for it (at
    # serializable, a write beside it could fail it with a serialization failure).
    engine = create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.connect(dsn, client_encoding=db.CLIENT_ENCODING),
        poolclass=NullPool,
        isolation_level="READ COMMITTED",
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
    dsn: str, revision: str = "head", *, lock_wait: float = locks.WAIT_SECONDS
) -> Migration:
    """Alembic upgrade to `revision`: what was applied, and the server's NOTICEs (what was
    skipped). Waits up to `lock_wait` seconds for the tables it changes to be free."""
    from alembic import command

    return _run_alembic(dsn, command.upgrade, revision, lock_wait=lock_wait)


def downgrade(dsn: str, revision: str = "base") -> Migration:
    from alembic import command

    return _run_alembic(dsn, command.downgrade, revision)
