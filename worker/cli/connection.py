"""The command line's connection to a database that has our schema installed, of this
package's release."""

from __future__ import annotations

from worker import conninfo, db, exceptions, pooler, schema
from worker.cli import hints, output
from worker.config import Settings


def connect(settings: Settings, *, searcher: bool = False) -> db.Connection:
    """A connection to the database with our schema, of this package's release (else
    SchemaMismatch, saying what to run); says on stderr which database it is.
    `searcher`: as the role POST /search searches as (worker/http/work.py), whose rights and
    row-level security decide what an answer holds: EMBED_SEARCH_DATABASE_URL's, when set."""
    if searcher and settings.search_database_url:
        dsn = settings.search_database_url
        output.say(f"{output.database_line(dsn, dsn)}, as EMBED_SEARCH_DATABASE_URL's role")
    else:
        dsn = settings.dsn
        output.say_database(dsn, settings.database_url)
    searching_apart = searcher and bool(settings.search_database_url)
    refuse_misconfigured(
        dsn, settings, url="EMBED_SEARCH_DATABASE_URL" if searching_apart else "DATABASE_URL"
    )
    conn = db.connect(
        dsn, lock_timeout_ms=settings.lock_timeout_ms, per_transaction=settings.per_transaction
    )
    if searcher:  # whose rights and row-level security decide what the answer holds
        output.say(f"searching as role {conn.info.user}")
    try:
        installed = of_this_release(conn, settings)
    except BaseException:
        conn.close()
        raise
    if not installed:
        conn.close()
        raise exceptions.SchemaMismatch(
            f"the embeddings schema is not installed in {conninfo.describe(dsn)}: run "
            f"`{hints.command('migrate', settings.dsn)}` (or `make migrate` for the local cluster)"
        )
    return conn


def refuse_misconfigured(
    dsn: str, settings: Settings, *, url: str = "DATABASE_URL", connect_timeout: int = 10
) -> None:
    """EMBED_POOL_MODE=session behind a transaction pooler, which `dsn` (`url`'s) reaches:
    refused (ConfigError), before any session setting of ours is made there, on a connection of
    its own made per transaction (worker/pooler.py). Nothing to check with
    EMBED_POOL_MODE=transaction."""
    if settings.per_transaction:
        return
    with db.connect(
        dsn,
        connect_timeout=connect_timeout,
        lock_timeout_ms=settings.lock_timeout_ms,
        per_transaction=True,
    ) as probe:
        pooler.refuse(
            probe,
            dsn,
            pool_mode=settings.pool_mode,
            lock_timeout_ms=settings.lock_timeout_ms,
            url=url,
        )


def connect_if_reachable(settings: Settings) -> db.Connection:
    """A connection to DATABASE_URL for a command that reads the database only when it can be
    reached (`embed`, `model list`: an EmbedWorkerError from here means "go on without it"),
    made as the other commands make theirs: EMBED_POOL_MODE=session behind a transaction pooler
    refused first (ConfigError, exit 2), before any session setting of ours reaches the pool."""
    refuse_misconfigured(settings.dsn, settings, connect_timeout=3)
    return db.connect(settings.dsn, connect_timeout=3, per_transaction=settings.per_transaction)


def of_this_release(conn: db.Connection, settings: Settings, *, otherwise: str = "") -> bool:
    """Whether our schema is installed in the database of `conn` (False: it is not); raises
    SchemaMismatch, saying what to run and then `otherwise`, when it is of another release. Of
    this package's release, as `run` checks it (worker/process/startup.py): an older schema
    lacks what the commands call, and said so as raw SQL errors (or, read for the registry's
    models, was read as if it were this release's). For the commands that read the schema only
    when they must (`embed`, `model list`) as for those that always do."""
    with db.translated():
        if not schema.installed(conn):
            return False
        mismatch = schema.mismatch(conn, migrate=hints.command("migrate", settings.dsn))
    if mismatch is not None:
        raise exceptions.SchemaMismatch(f"{mismatch}{otherwise}")
    return True
