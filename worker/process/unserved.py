"""What a `run --once` leaves behind that it could not serve: the jobs of its queue's targets
that are held (a model it cannot load, a column that does not fit the model, a provider that
is down, a model change's model missing) or that cannot be served at all (a `problem`: a column
dropped, say). The queue "drained" only of what it could take, so the run exits with
exits.UNSERVED and one line saying what was left and why: a cron job or CI step can tell.

Which targets, and how many jobs, are read from the database at the end of the run
(sql/52_stopped.sql, embeddings.status), not from what this run deferred: jobs another run held
a moment ago wait out their minute unseen by this one, and are left all the same. Why is this
run's own reason where it has one (`own`: a model it cannot load, a provider whose circuit is
open, a batch it deferred), not the one stored by whichever run held them: an earlier run's
EMBED_OFFLINE=1 sent the operator after the wrong cause when this one failed otherwise."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import psycopg

from worker import db, exceptions, queries

logger = logging.getLogger(__name__)

MAX_NAMED = 5  # targets named in the line; the rest counted


def left(
    dsn: str,
    queue: str,
    lock_timeout_ms: int,
    per_transaction: bool = False,
    own: Mapping[int, str] | None = None,
) -> str | None:
    """The line saying which of `queue`'s targets still have jobs this worker could not serve,
    how many and why (a problem of the target, else this run's reason in `own`, by target id,
    else the one recorded); None when there are none (or the database cannot say: the run's
    own outcome stands, with a warning)."""
    try:
        with (
            db.connect(
                dsn, lock_timeout_ms=lock_timeout_ms, per_transaction=per_transaction
            ) as conn,
            db.translated(),
        ):
            found = _held_targets(conn, queue, own or {})
    except (psycopg.Error, exceptions.EmbedWorkerError) as exc:
        logger.warning("could not check for jobs left unserved: %s", exc)
        return None
    if not found:
        return None
    jobs = sum(n for _, n, _ in found)
    named = "; ".join(
        f"{target}: {n:,} job(s), {why.rstrip('.')}" for target, n, why in found[:MAX_NAMED]
    )
    more = f"; and {len(found) - MAX_NAMED} more table(s)" if len(found) > MAX_NAMED else ""
    return (
        f"run --once left {jobs:,} job(s) of {len(found)} table(s) it could not serve"
        f" (held, not failed): {named}{more}. `embed-worker status` says what to do for each"
    )


def _held_targets(
    conn: db.Connection, queue: str, own: Mapping[int, str]
) -> list[tuple[str, int, str]]:
    """(target, jobs waiting, why) of each held or unservable target of `queue` with jobs."""
    ids = [row[0] for row in conn.execute(queries.get("unserved_targets"), {"queue": queue})]
    if not ids:
        return []
    with conn.transaction():  # status counts those targets alone (status_only)
        conn.execute(queries.get("status_only"), {"targets": "{" + ",".join(map(str, ids)) + "}"})
        rows = conn.execute(queries.get("unserved_jobs"), {"targets": ids}).fetchall()
    return [
        (str(target), int(jobs), " ".join(str(problem or own.get(t) or stored or other).split()))
        for t, target, jobs, problem, stored, other in rows
    ]
