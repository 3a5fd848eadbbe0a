"""doctor's check of who searches: `POST /search` runs as the role of EMBED_SEARCH_DATABASE_URL,
else as the worker's own (`embed-worker search` as the same), and a search of a table that role
may not read is answered 403. The worker's role holds no right on the watched
tables (docs/security.md), so a worker whose searches were never given a role of their own
refuses every one (docs/http.md#post-search): said here, before an application meets it."""

from __future__ import annotations

import psycopg

from worker import db, exceptions, queries
from worker.cli.findings import Finding
from worker.cli.output import visible_sql
from worker.config import Settings

CHECK = "search"
SHOWN_TABLES = 5  # named in the finding; the rest counted


def findings(conn: db.Connection, settings: Settings) -> list[Finding]:
    """Whether POST /search's role may read every watched table (conn: the worker's, on a
    database with the schema installed)."""
    worker_role, _, database = _identity(conn)
    url = settings.search_database_url
    if url:
        try:
            with db.connect(
                url,
                connect_timeout=5,
                lock_timeout_ms=settings.lock_timeout_ms,
                per_transaction=settings.per_transaction,
            ) as c:
                role, quoted, searched_database = _identity(c)
        except exceptions.EmbedWorkerError as exc:
            return [
                Finding(
                    "FAIL",
                    CHECK,
                    f"cannot connect as EMBED_SEARCH_DATABASE_URL's role: {exc}",
                    "check EMBED_SEARCH_DATABASE_URL: POST /search answers 503 until it connects",
                )
            ]
        if searched_database != database:
            return [
                Finding(
                    "warn",
                    CHECK,
                    f"EMBED_SEARCH_DATABASE_URL connects to database {searched_database!r}, "
                    f"the worker's DATABASE_URL to {database!r}: POST /search looks for the "
                    "tables there",
                    "point EMBED_SEARCH_DATABASE_URL at the worker's database",
                )
            ]
        who = f"role {role} (EMBED_SEARCH_DATABASE_URL's)"
    else:
        role = worker_role
        who = f"the worker's own role {role} (EMBED_SEARCH_DATABASE_URL is unset)"
    try:
        with conn.transaction():
            rows = conn.execute(queries.get("unsearchable_tables"), {"role": role}).fetchall()
    except psycopg.Error:
        return []  # the registry unreadable: the status check said so already
    denied = [name for (name,) in rows]
    if not denied:
        return [
            Finding("ok", CHECK, f"POST /search runs as {who}, which may read every watched table")
        ]
    shown = ", ".join(denied[:SHOWN_TABLES])
    if len(denied) > SHOWN_TABLES:
        shown += f" and {len(denied) - SHOWN_TABLES} more"
    grant = f"GRANT SELECT ON {', '.join(denied)} TO"
    if url:
        fix = f"as the tables' owner: {grant} {quoted};"
    else:
        fix = (
            "give POST /search a read-only role of its own: as the tables' owner, "
            f"{grant} <reader>; then set EMBED_SEARCH_DATABASE_URL to connect as it"
        )
    fix = visible_sql(fix)  # a name with control characters: shown, and the same when pasted
    return [
        Finding(
            "warn",
            CHECK,
            f"POST /search runs as {who}, which may not read {shown}: it answers 403 to "
            "a search of them",
            fix,
        )
    ]


def _identity(conn: db.Connection) -> tuple[str, str, str]:
    """The connection's role, the same quoted as an identifier, and its database."""
    row = conn.execute(queries.get("session_identity")).fetchone()
    assert row is not None
    return str(row[0]), str(row[1]), str(row[2])
