"""Work another session is about to queue, which `run --once` waits for while it moves.

`run --once` ends when it finds nothing to read and nothing to step. Two kinds of work can be
out of its sight then, held by another session until that session commits: the triggers' inbox
rows another worker is moving into the queue (our move skips them), and the backfill another
worker is stepping (our step skips it). Two `--once` workers started together (a Job's parallel
pods) would otherwise see each other's work as none, and one would stop with its share undone.

The wait goes on while what it waits for moves, and no longer than `stall_seconds` without a
change: a worker's move or step is one short statement, so what stays as it was that long is
held by something else (a transaction left open after `SELECT embeddings.sweep()`, a
backfill's row held by an unfinished `watch()`, steps that keep failing), and --once ends
without that work, saying so; a worker that runs on gets it when it is let go.
"""

from __future__ import annotations

import logging
import time

from worker import db, queries

logger = logging.getLogger(__name__)

# A backfill step runs a table owner's scan, bounded by EMBED_OWNER_CODE_TIMEOUT_SECONDS; work
# that did not move for this many of those bounds (and at least a second, whatever the bound:
# a move of the inbox, which runs no owner's code, is not bounded by it) is held by something
# else.
STALLED_BOUNDS = 5
STALLED_SECONDS_AT_LEAST = 1.0


class WorkElsewhere:
    """What of `queue`'s work other sessions hold, as `run --once` last saw it."""

    def __init__(self, queue: str, owner_code_seconds: float) -> None:
        self.queue = queue
        self.stall_seconds = max(STALLED_SECONDS_AT_LEAST, STALLED_BOUNDS * owner_code_seconds)
        self._seen: dict[str, list[tuple[object, ...]]] = {}
        self._moved_at = 0.0
        self._said = False  # the stall of what was last seen logged

    def waiting(self, conn: db.Connection) -> bool:
        """True while keys of the queue wait in the inbox, or a backfill of its tables has rows
        left, and either moved within `stall_seconds`; False once there is none (or it is left,
        logged)."""
        with db.translated():
            seen = {
                what: [tuple(r) for r in conn.execute(queries.get(query), {"queue": self.queue})]
                for what, query in (("inbox", "inbox_pending"), ("backfill", "backfill_cursors"))
            }
        now = time.monotonic()
        if seen != self._seen:
            self._seen, self._moved_at, self._said = seen, now, False
        if not any(seen.values()) or now - self._moved_at < self.stall_seconds:
            return any(seen.values())
        if self._said:  # (asked before every read while idle: once is enough)
            return False
        self._said = True
        logger.warning(
            "%s of queue %s not moved for %.0f s (held by a session that is not a worker's move "
            "or step, or steps that keep failing): leaving it to a worker that runs on",
            " and ".join(what for what, rows in seen.items() if rows),
            self.queue,
            now - self._moved_at,
        )
        return False
