"""The command line's connection to a database that has our schema installed."""

from __future__ import annotations

from worker import db, exceptions, schema
from worker.cli import hints, output
from worker.config import Settings


def connect(settings: Settings, *, searcher: bool = False) -> db.Connection:
    """A connection to the database with our schema; says on stderr which database it is.
    `searcher`: as the role POST /search searches as (worker/http/work.py), whose rights and
    row-level security decide what an answer holds: EMBED_SEARCH_DATABASE_URL's, when set."""
    if searcher and settings.search_database_url:
        dsn = settings.search_database_url
        output.say(f"{output.database_line(dsn, dsn)}, as EMBED_SEARCH_DATABASE_URL's role")
    else:
        dsn = settings.dsn
        output.say_database(dsn, settings.database_url)
    conn = db.connect(
        dsn, lock_timeout_ms=settings.lock_timeout_ms, per_transaction=settings.per_transaction
    )
    if searcher:  # whose rights and row-level security decide what the answer holds
        output.say(f"searching as role {conn.info.user}")
    with db.translated():
        missing = not schema.installed(conn)
    if missing:
        conn.close()
        raise exceptions.DatabaseError(
            f"the embeddings schema is not installed in {db.describe(dsn)}: run "
            f"`{hints.command('migrate', settings.dsn)}` (or `make migrate` for the local cluster)"
        )
    return conn
