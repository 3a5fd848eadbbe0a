"""doctor's check of push mode: pg_net posts asynchronously, so pg_cron says a dispatch() run
succeeded whatever became of its requests. dispatch() records each request
(embeddings.dispatched) and reads its answer on its next run: the failed ones of the last hour
are said here with the first error (docs/supabase.md, "Troubleshooting push mode"). Their jobs
were given their read back: a failed post is not an attempt, but nothing is embedded either.
An endpoint whose posts kept failing is backed off from (one job at a time until a post goes
through): said with since when."""

from __future__ import annotations

import datetime

import psycopg

from worker import db, queries
from worker.cli.findings import Finding

CHECK = "push mode"


def findings(conn: db.Connection) -> list[Finding]:
    """Nothing where push mode never ran (no request recorded in the last hour)."""
    try:
        with conn.transaction():
            row = conn.execute(queries.get("failed_posts")).fetchone()
            endpoints = conn.execute(queries.get("backing_off_endpoints")).fetchall()
    except psycopg.errors.InsufficientPrivilege:
        return [
            Finding(
                "ok",
                CHECK,
                "not checked: this role cannot read embeddings.dispatched (the schema owner's);"
                " run doctor as the schema's owner to see push mode's failed posts",
            )
        ]
    except psycopg.Error:
        return []  # a schema without the table (an older release's): nothing recorded
    assert row is not None
    failed, given_back, first_error, first_sent, unread = row
    found = [backing_off(*endpoint) for endpoint in endpoints]
    if failed:
        found.append(
            failed_finding(int(failed), int(given_back or 0), str(first_error), first_sent)
        )
    if unread:
        found.append(_unread(conn, int(unread)))
    return found


def failed_finding(
    failed: int, given_back: int, first_error: str, first_sent: datetime.datetime
) -> Finding:
    return Finding(
        "FAIL",
        CHECK,
        f"{failed} post(s) of embeddings.dispatch() failed in the last hour, the first at "
        f"{first_sent:%Y-%m-%d %H:%M:%S %Z}: {first_error} ({given_back} job(s) given their read"
        " back: not counted as attempts, not embedded either)",
        _fix(first_error),
    )


def backing_off(
    url: str,
    failed_posts: int,
    since: datetime.datetime,
    last_error: str,
    next_probe: datetime.datetime,
) -> Finding:
    return Finding(
        "FAIL",
        CHECK,
        f"embeddings.dispatch() is backing off from {url} since {since:%Y-%m-%d %H:%M:%S %Z}: "
        f"{failed_posts} post(s) in a row failed, the last: {last_error}; it posts one job at a "
        f"time until one goes through, the next not before {next_probe:%H:%M:%S %Z}",
        _fix(last_error),
    )


def _fix(error: str) -> str:
    if error.startswith("HTTP 401"):
        return "dispatch()'s token must be the worker's EMBED_HTTP_TOKEN"
    if error.startswith("HTTP 404") or error.startswith("HTTP 405"):
        return "dispatch()'s url must be the worker's POST /functions/v1/embed"
    if error.startswith("HTTP 503"):
        return "the worker was stopping or not ready: check that it runs (GET /readyz)"
    return (
        "check that the worker runs and that dispatch()'s url reaches it from the database "
        "server (host, port, network); pg_net's table says more: SELECT * FROM "
        "net._http_response ORDER BY created DESC LIMIT 20"
    )


def _unread(conn: db.Connection, unread: int) -> Finding:
    """Requests whose answer no dispatch() read: pg_net's worker never took them (they wait in
    its queue), or dispatch() stopped running (unscheduled?); pg_net's table says how they
    went, where this role may read it."""
    untaken = _untaken(conn)
    if untaken is not None:
        return untaken
    detail = (
        f"{unread} request(s) of embeddings.dispatch() older than a minute whose answer no "
        "dispatch() read since: is its pg_cron job still scheduled?"
    )
    try:
        with conn.transaction():
            row = conn.execute(queries.get("unread_failed_posts")).fetchone()
    except psycopg.Error:
        detail += " (pg_net's answers not checked: this role cannot read net._http_response)"
        return Finding("warn", CHECK, detail, "SELECT * FROM cron.job")
    if row and row[0]:
        detail += f"; {row[0]} of them failed, the first: {row[1]}"
        return Finding("FAIL", CHECK, detail, _fix(str(row[1])))
    return Finding("warn", CHECK, detail, "SELECT * FROM cron.job")


def _untaken(conn: db.Connection) -> Finding | None:
    """pg_net's background worker not taking requests (not running, or running in another
    database): dispatch() runs on schedule and its posts wait in pg_net's queue unanswered."""
    try:
        with conn.transaction():
            row = conn.execute(queries.get("untaken_posts")).fetchone()
    except psycopg.Error:
        return None  # no pg_net here, or this role may not read its queue
    if not row or not row[0]:
        return None
    return Finding(
        "FAIL",
        CHECK,
        f"pg_net's background worker is not taking requests: {row[0]} request(s) of "
        f"embeddings.dispatch() have waited in net.http_request_queue since "
        f"{row[1]:%Y-%m-%d %H:%M:%S %Z}, unsent",
        "pg_net's worker must run in this database: shared_preload_libraries includes pg_net "
        "and pg_net.database_name names this database (SHOW pg_net.database_name); then "
        "restart it (SELECT net.worker_restart(), or restart PostgreSQL) and look in the "
        "server's log for why it stopped",
    )
