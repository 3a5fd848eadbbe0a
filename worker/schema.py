"""The database schema: where its SQL lives, installing it, and migrating with Alembic.

`sql/` holds the current schema as readable SQL files, applied in name order
(`00_extensions.sql`, `10_schema.sql`, ...); `sql/uninstall.sql` removes it, whatever revision
installed it. The Alembic revisions in `migrations/versions/` are frozen once released: 0001
applies its own copy of the 0.1.0 files (`0001_initial/`), and each later revision applies only
its difference (`NNNN_name.sql`, optionally `NNNN_name.down.sql` for a step back). A test keeps
the two paths equal: a database migrated from any revision to head has the schema of a fresh
`sql/` install. A wheel carries both directories inside the package (`worker/_sql`,
`worker/_migrations`), so an installed worker migrates without a checkout.
"""

from __future__ import annotations

import importlib.resources
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from worker import exceptions
from worker.db import Connection

logger = logging.getLogger(__name__)

VERSION_TABLE = "embed_worker_alembic_version"
# Revisions that shipped in a release, oldest first: frozen, and upgraded from in the tests.
# Revisions after the last of them are unreleased and may still change.
RELEASED_REVISIONS = ("0001",)  # 0.1.0
# Serialises concurrent `embed-worker migrate` runs (several containers starting at once).
MIGRATION_LOCK_KEY = 0x656D6265  # "embe"

_PACKAGE_DIR = Path(__file__).resolve().parent


def _bundled_or_checkout(bundled: str, checkout: str) -> Path:
    inside = _PACKAGE_DIR / bundled
    return inside if inside.is_dir() else _PACKAGE_DIR.parent / checkout


def sql_dir() -> Path:
    return _bundled_or_checkout("_sql", "sql")


def migrations_dir() -> Path:
    return _bundled_or_checkout("_migrations", "migrations")


def install_files() -> list[Path]:
    """The install scripts in the order they run: `NN_name.sql`."""
    files = sorted(p for p in sql_dir().glob("[0-9][0-9]_*.sql"))
    if not files:
        raise exceptions.EmbedWorkerError(f"no schema files found in {sql_dir()}")
    return files


def bundled_pgmq_sql() -> str:
    """The pgmq SQL shipped in the `pgmq` PyPI package (for servers without the extension)."""
    return (importlib.resources.files("pgmq") / "sql" / "pgmq.sql").read_text(encoding="utf-8")


def ensure_pgmq(conn: Connection) -> None:
    """pgmq as an extension when the server offers it, else as plain SQL from the pgmq package."""
    row = conn.execute(
        "SELECT to_regclass('pgmq.meta') IS NOT NULL,"
        "       EXISTS (SELECT FROM pg_available_extensions WHERE name = 'pgmq')"
    ).fetchone()
    assert row is not None
    installed, available = row
    if installed:
        return
    if available:
        conn.execute("CREATE EXTENSION pgmq")
        return
    logger.warning("pgmq extension not available on this server: installing its SQL as plain SQL")
    conn.execute(bundled_pgmq_sql().encode())


def run_files(conn: Connection, files: list[Path]) -> None:
    for path in files:
        logger.debug("running %s", path.name)
        # Bytes: the files are run as written, with no client-side parameter parsing of `%`.
        conn.execute(path.read_bytes())


def install(conn: Connection) -> None:
    """Installs the whole current schema on `conn`, inside the caller's transaction."""
    ensure_pgmq(conn)
    run_files(conn, install_files())


def revision_files(name: str) -> list[Path]:
    """A revision's SQL: `versions/<name>/*.sql` in name order, or `versions/<name>.sql`."""
    versions = migrations_dir() / "versions"
    folder = versions / name
    files = sorted(folder.glob("*.sql")) if folder.is_dir() else [versions / f"{name}.sql"]
    missing = [p for p in files if not p.is_file()]
    if not files or missing:
        raise exceptions.EmbedWorkerError(f"revision {name}: no SQL at {missing or folder}")
    return files


def revision_connection() -> Connection:
    """The psycopg connection under the Alembic operation context (inside a revision)."""
    from alembic import op

    conn = op.get_bind().connection.driver_connection
    assert isinstance(conn, psycopg.Connection)
    return conn


def upgrade_revision(name: str) -> None:
    """Body of a revision's upgrade(): runs its frozen SQL."""
    run_files(revision_connection(), revision_files(name))


def downgrade_revision(name: str) -> None:
    """Body of a revision's downgrade() (after 0001). Going down to base, nothing: revision
    0001's downgrade runs sql/uninstall.sql, which removes the schema of any revision. One step
    down runs `<name>.down.sql`; a revision without one cannot be stepped back (restore a
    backup, or downgrade to base and migrate again)."""
    from alembic import context

    if context.get_revision_argument() in (None, "base"):
        return
    down = migrations_dir() / "versions" / f"{name}.down.sql"
    if not down.is_file():
        raise exceptions.EmbedWorkerError(
            f"revision {name} cannot be stepped back; downgrade to base removes the schema"
        )
    run_files(revision_connection(), [down])


def uninstall(conn: Connection) -> None:
    """Removes the schema installed by `install` (user data stays)."""
    conn.execute((sql_dir() / "uninstall.sql").read_bytes())


@contextmanager
def _notices_logged(conn: Connection) -> Iterator[list[str]]:
    notices: list[str] = []

    def keep(diag: psycopg.errors.Diagnostic) -> None:
        if diag.message_primary:
            notices.append(diag.message_primary)
            logger.info("%s", diag.message_primary)

    conn.add_notice_handler(keep)
    try:
        yield notices
    finally:
        conn.remove_notice_handler(keep)


def _run_alembic(dsn: str, action: Callable[..., None], *args: str) -> list[str]:
    from alembic.config import Config  # imported here: only `migrate` needs Alembic
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    engine = create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(dsn), poolclass=NullPool
    )
    try:
        with engine.begin() as connection:
            driver = connection.connection.driver_connection
            assert isinstance(driver, psycopg.Connection)
            with _notices_logged(driver) as notices:
                config.attributes["connection"] = connection
                action(config, *args)
    finally:
        engine.dispose()
    return notices


def migrate(dsn: str, revision: str = "head") -> list[str]:
    """Alembic upgrade to `revision`; returns the server's NOTICEs (what was skipped)."""
    from alembic import command

    return _run_alembic(dsn, command.upgrade, revision)


def downgrade(dsn: str, revision: str = "base") -> list[str]:
    from alembic import command

    return _run_alembic(dsn, command.downgrade, revision)


def current_revision(conn: Connection) -> str | None:
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (f"public.{VERSION_TABLE}",)
    ).fetchone()
    if not row or not row[0]:
        return None
    version = conn.execute(f"SELECT version_num FROM public.{VERSION_TABLE}").fetchone()
    return str(version[0]) if version else None
