"""Model changes in the worker: their completion (the database side is sql/44_changes.sql; the
rows' two vectors meanwhile are worker/pipeline/shadow.py).

When every row has its new vector, embeddings_internal.complete_changes() swaps the columns in one
short transaction; the worker calls it from its keeper (at most every CHECK_SECONDS) and when
`run --once` drains. A swap that finds its table held (a long transaction) backs off: each call
asks for the lock in short attempts only (sql/41_locks.sql), and the next call comes after a
growing, jittered pause, so the application's statements never queue behind the swap for long.

A swap that fails (a view of the user's on the old column, a name taken) does not go away by
waiting, and each try takes the table's lock and runs the swap's DDL before it rolls back: the
next call comes after a growing, jittered pause too (up to FAILED_BACKOFF_MAX_SECONDS), said
once, not at every call. The pause starts over as soon as what the swap depends on changes (the
change itself, keep_old say, the target's definition, the new model's registration), read at
each keeper round while the pause lasts: the fix status gives takes effect at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from worker import db, queries
from worker.backoff import Backoff
from worker.pipeline.targets import TargetRegistry

logger = logging.getLogger(__name__)

CHECK_SECONDS = 2.0
BUSY_BACKOFF_MAX_SECONDS = 30.0  # the longest pause after swaps that found the table held
BUSY_BACKOFF = Backoff(CHECK_SECONDS, BUSY_BACKOFF_MAX_SECONDS, spread=(0.5, 1.5))
FAILED_BACKOFF_MAX_SECONDS = 60.0  # the longest pause after swaps that failed
FAILED_BACKOFF = Backoff(CHECK_SECONDS, FAILED_BACKOFF_MAX_SECONDS, spread=(0.5, 1.5))
FAILED = "could not complete"  # complete_changes()' answer for a swap that failed


class Completer:
    """Calls embeddings_internal.complete_changes() when some target is being changed."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._next = float("-inf")
        self._busy = 0  # calls in a row that found a table held
        self._failed = 0  # calls in a row in which a swap failed
        self._failed_on: dict[int, str] = {}  # the changes those swaps failed on (digests)
        self._failing: dict[int, str] = {}  # the swap failure last logged, by target id

    def run(self, conn: db.Connection, registry: TargetRegistry, *, force: bool) -> bool:
        """Completes the changes that are complete (at most every CHECK_SECONDS, less often
        while a table is held or a swap fails, unless `force`). True when one completed or
        re-queued rows (there is work again)."""
        if not any(t.in_change for t in registry.snapshot().values()):
            return False
        now = self._clock()
        changes = self._changes(conn) if self._failed else None
        if changes is not None and changes != self._failed_on:
            logger.info(
                "model change: a change in progress or its model's registration changed: the"
                " swap that failed is tried again now"
            )
            self._failed = 0
        elif not force and now < self._next:
            return False
        with db.translated():
            results = conn.execute(queries.compose("complete_changes")).fetchall()
        failed = any(r.startswith(FAILED) for _, r in results)
        if failed:
            self._failed_on = changes if changes is not None else self._changes(conn)
        self._next = now + self._pause(any(r.startswith("table busy") for _, r in results), failed)
        progressed = False
        for target_id, result in results:
            if not result.startswith((FAILED, "table busy")):
                self._failing.pop(target_id, None)  # past its failure: a new one is news
            if result == "done":
                logger.info("model change of target %d completed: columns swapped", target_id)
                registry.invalidate()
                progressed = True
            elif result.endswith("the new vector: queued"):
                logger.info("model change of target %d: %s", target_id, result)
                progressed = True
            elif result.startswith(FAILED):
                # Recorded by the database (the stopped state swap_failed, with its fix): said
                # once here, not at every call, and again only when it says something else.
                if self._failing.get(target_id) != result:
                    logger.warning(
                        "model change of target %d: %s (the swap retries by itself, less and"
                        " less often, at once when the change is redefined; embed-worker status"
                        " and doctor show it as stopped, swap_failed, with the fix)",
                        target_id,
                        result,
                    )
                self._failing[target_id] = result
            elif result.startswith("table busy") and self._busy in (1, 5, 20):
                logger.warning(
                    "model change of target %d: the swap waits for its table lock (%d attempts):"
                    " a long transaction holds the table (embed-worker status names it)",
                    target_id,
                    self._busy,
                )
        return progressed

    def _changes(self, conn: db.Connection) -> dict[int, str]:
        """Each change in progress as its swap depends on it (a digest, by target id)."""
        with db.translated():
            return dict(conn.execute(queries.compose("change_definitions")).fetchall())

    def _pause(self, busy: bool, failed: bool = False) -> float:
        """Seconds until the next call: CHECK_SECONDS, or after calls that found a table held
        or in which a swap failed, doubling up to BUSY_BACKOFF_MAX_SECONDS or
        FAILED_BACKOFF_MAX_SECONDS, jittered by +-50% (workers do not retry in step)."""
        self._busy = self._busy + 1 if busy else 0
        self._failed = self._failed + 1 if failed else 0
        if not self._busy and not self._failed:
            return CHECK_SECONDS
        return max(
            BUSY_BACKOFF.delay(self._busy) if self._busy else 0.0,
            FAILED_BACKOFF.delay(self._failed) if self._failed else 0.0,
        )
