"""`doctor`'s verification check: when each watched table's vectors were last verified against
their content, and how to schedule the verifying sweep where this database can."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from worker import db, queries
from worker.cli import hints, output
from worker.cli.findings import Finding


def finding(conn: db.Connection, rows: list[dict[str, Any]], max_age: float, dsn: str) -> Finding:
    """verification_finding() for `rows` (status rows), with when each table was watched and
    whether pg_cron runs jobs in this database, read from `conn`."""
    watched_at = dict(conn.execute(queries.get("targets_watched_at")).fetchall())
    cron = conn.execute(queries.get("pg_cron_here")).fetchone()
    return verification_finding(
        rows, max_age, dsn, watched=watched_at, cron_here=bool(cron and cron[0])
    )


def verification_finding(
    rows: list[dict[str, Any]],
    max_age: float,
    dsn: str,
    now: datetime | None = None,
    *,
    watched: dict[int, datetime] | None = None,
    cron_here: bool = True,
) -> Finding:
    """ "Are all my vectors current?": when each watched table's last verifying pass
    (sweep(verify => true), sql/64_verify.sql) finished; a warning for a table not verified
    within `max_age` seconds (EMBED_VERIFY_MAX_AGE_SECONDS), or never since it was watched that
    long ago (`watched`: a table watched a minute ago is not due): only that pass finds the
    vectors that writes the triggers never saw left stale. The fix offers
    embeddings.schedule_sweep() only where pg_cron can run it (`cron_here`)."""
    now = now or datetime.now(UTC)
    watched = watched or {}
    limit = output.age(max_age)
    stale, due, waiting = [], [], []
    for r in rows:
        finished: datetime | None = r.get("last_verified")
        since = watched.get(r.get("target_id", -1))
        if finished is None and since is not None and (now - since).total_seconds() <= max_age:
            waiting.append(r)  # watched within max age: no pass is due yet
            continue
        due.append(r)
        if finished is None:
            stale.append(f"{r['target']} (never)")
        elif (now - finished).total_seconds() > max_age:
            stale.append(f"{r['target']} (last pass finished {_when(finished, now)})")
    scheduler = f"run `{hints.command('sweep --verify', dsn)}` from your scheduler"
    if stale:
        return Finding(
            "warn",
            "verification",
            f"{len(stale)} of {len(rows)} watched table(s) not verified against their content "
            f"within {limit} (EMBED_VERIFY_MAX_AGE_SECONDS): {', '.join(stale)}"
            + _waiting(waiting, limit),
            "schedule the verifying sweep: SELECT embeddings.schedule_sweep(verify => true); "
            f"(pg_cron), or {scheduler}"
            if cron_here
            else f"schedule the verifying sweep: {scheduler} (pg_cron cannot run jobs in this "
            "database: it runs them in cron.database_name's)",
        )
    if not due:
        return Finding(
            "ok",
            "verification",
            f"no watched table is due for verification yet (each within {limit} of being watched)",
        )
    oldest = min(r["last_verified"] for r in due)
    # Tables still within their first max age are not verified yet: "every table" would claim
    # a pass that has not run on them.
    verified = (
        f"{len(due)} of {len(rows)} watched table(s) verified against their content"
        if waiting
        else "every watched table verified against its content"
    )
    return Finding(
        "ok",
        "verification",
        f"{verified} within {limit}; the oldest last "
        f"pass finished {_when(oldest, now)}" + _waiting(waiting, limit),
    )


def _waiting(waiting: list[dict[str, Any]], limit: str) -> str:
    """What a finding adds for the tables not due yet: how many, and that they wait."""
    if not waiting:
        return ""
    return (
        f"; {len(waiting)} more watched within {limit} wait for their first pass (not due yet):"
        f" {', '.join(str(r['target']) for r in waiting)}"
    )


def _when(at: datetime, now: datetime) -> str:
    stamp = at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{stamp}, {output.age(max((now - at).total_seconds(), 0.0))} ago"
