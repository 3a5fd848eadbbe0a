"""Model changes in the worker: their completion (the database side is sql/44_changes.sql; the
rows' two vectors meanwhile are worker/pipeline/shadow.py).

When every row has its new vector, embeddings_internal.complete_changes() swaps the columns in one
short transaction; the worker calls it from its keeper (at most every CHECK_SECONDS) and when
`run --once` drains. A swap that finds its table held (a long transaction) backs off: each call
asks for the lock in short attempts only (sql/41_locks.sql), and the next call comes after a
growing, jittered pause, so the application's statements never queue behind the swap for long.
"""

from __future__ import annotations

import logging
import time

from worker import db, queries
from worker.backoff import Backoff
from worker.pipeline.targets import TargetRegistry

logger = logging.getLogger(__name__)

CHECK_SECONDS = 2.0
BUSY_BACKOFF_MAX_SECONDS = 30.0  # the longest pause after swaps that found the table held
BUSY_BACKOFF = Backoff(CHECK_SECONDS, BUSY_BACKOFF_MAX_SECONDS, spread=(0.5, 1.5))


class Completer:
    """Calls embeddings_internal.complete_changes() when some target is being changed."""

    def __init__(self) -> None:
        self._next = float("-inf")
        self._busy = 0  # calls in a row that found a table held
        self._failing: dict[int, str] = {}  # the swap failure last logged, by target id

    def run(self, conn: db.Connection, registry: TargetRegistry, *, force: bool) -> bool:
        """Completes the changes that are complete (at most every CHECK_SECONDS, less often
        while a table is held, unless `force`). True when one completed or re-queued rows
        (there is work again)."""
        if not any(t.in_change for t in registry.snapshot().values()):
            return False
        now = time.monotonic()
        if not force and now < self._next:
            return False
        with db.translated():
            results = conn.execute(queries.compose("complete_changes")).fetchall()
        self._next = now + self._pause(any(r.startswith("table busy") for _, r in results))
        progressed = False
        for target_id, result in results:
            if not result.startswith(("could not complete", "table busy")):
                self._failing.pop(target_id, None)  # past its failure: a new one is news
            if result == "done":
                logger.info("model change of target %d completed: columns swapped", target_id)
                registry.invalidate()
                progressed = True
            elif result.endswith("the new vector: queued"):
                logger.info("model change of target %d: %s", target_id, result)
                progressed = True
            elif result.startswith("could not complete"):
                # Recorded by the database (the stopped state swap_failed, with its fix): said
                # once here, not at every call, and again only when it says something else.
                if self._failing.get(target_id) != result:
                    logger.warning(
                        "model change of target %d: %s (the swap retries by itself; embed-worker"
                        " status and doctor show it as stopped, swap_failed, with the fix)",
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

    def _pause(self, busy: bool) -> float:
        """Seconds until the next call: CHECK_SECONDS, or after calls that found a table held,
        doubling up to BUSY_BACKOFF_MAX_SECONDS, jittered by +-50% (workers do not retry in
        step)."""
        self._busy = self._busy + 1 if busy else 0
        if not self._busy:
            return CHECK_SECONDS
        return BUSY_BACKOFF.delay(self._busy)
