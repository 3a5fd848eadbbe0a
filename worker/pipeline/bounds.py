"""How long the stages wait for what others hold, and what a wait cut short makes of a row.

Nothing the worker runs waits without bound (docs/reliability.md, "Bounded waits"). Every
statement waits at most EMBED_LOCK_TIMEOUT_MS for a lock (worker/session_guard.py), and a
statement that runs a table owner's code (its content function when the worker loads, its
triggers when it writes) runs at most owner_code_ms(): EMBED_OWNER_CODE_TIMEOUT_SECONDS, plus
OWNER_CODE_MS_PER_ROW for each row or chunk it reads or writes (the vectors and their index
entries written in the same statement take time of their own).

A row held up by a lock is BLOCKED: it waits for a later batch, spending no attempt (the lock
is not the row's fault, and the row is embedded once the lock goes), re-queued after
blocked_delay() of the times it was held up before, so that a long-held lock does not make
every batch wait for it again. A statement of the owner's code past its bound is the row's own
fault, once it is proven to be that row's: the row fails (an attempt, retried, then
dead-lettered), its neighbours not tried yet are BLOCKED.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from worker.config import PG_INTEGER_MAX
from worker.pipeline import pieces
from worker.pipeline.batch import Row

OWNER_CODE_MS_PER_ROW = 5
# A target whose owner code ran past its bound has its rows loaded and written one at a time
# for this long after: a statement of them together would only run past it again first.
OVERRUN_SECONDS = 60.0
# A blocked row's next try: after 1, 2, 4 ... seconds, at most BLOCKED_MAX_SECONDS.
BLOCKED_MAX_SECONDS = 30


def owner_code_ms(seconds: float, rows: list[Row] | None = None) -> int:
    """The statement timeout of a statement that runs a table owner's code over `rows`
    (`seconds`: EMBED_OWNER_CODE_TIMEOUT_SECONDS, the batch's limits.owner_code_seconds)."""
    # (at most the largest statement_timeout: the setting's ceiling, config.SECONDS_MAX, plus the
    # rows' allowance could pass it, and the statement would fail on the SET instead)
    return min(round(seconds * 1000) + OWNER_CODE_MS_PER_ROW * work(rows), PG_INTEGER_MAX)


def work(rows: list[Row] | None) -> int:
    """Rows, or chunks where a row is a document of chunks, that one statement reads or writes."""
    return sum(len(r.chunks.chunks) if r.chunks is not None else 1 for r in rows or [])


class Overruns:
    """The targets whose owner code ran past its bound lately, by database (in this process:
    the fetcher's load and the writer's write both look)."""

    def __init__(self) -> None:
        self._until: dict[tuple[str, int], float] = {}
        self._lock = threading.Lock()

    def note(self, conn: Any, target_id: int) -> None:
        with self._lock:
            self._until[(pieces.database_of(conn), target_id)] = time.monotonic() + OVERRUN_SECONDS

    def recent(self, conn: Any, target_id: int) -> bool:
        key = (pieces.database_of(conn), target_id)
        with self._lock:
            until = self._until.get(key)
            if until is not None and until <= time.monotonic():
                del self._until[key]
                until = None
        return until is not None


OVERRUNS = Overruns()


def blocked_delay(times: int) -> int:
    """Seconds before a row held up `times` times before is tried again."""
    return int(min(2 ** min(times, 16), BLOCKED_MAX_SECONDS))


def ignored_bound_error(what: str) -> str:
    """A row's error when its owner's code caught the cancel of its bound, and the watchdog
    ended the session it ran in (worker/process/watchdog.py)."""
    return (
        f"{what}: the table owner's code ran past its bound (EMBED_OWNER_CODE_TIMEOUT_SECONDS)"
        " and caught the cancel: its session was ended"
    )


def owner_code_error(what: str, ms: int) -> str:
    """A row's error when the owner's code ran past its bound (`what`: where it ran)."""
    return (
        f"{what} ran longer than {ms / 1000:g} s, the bound of the table owner's code"
        " (EMBED_OWNER_CODE_TIMEOUT_SECONDS, plus"
        f" {OWNER_CODE_MS_PER_ROW} ms per row or chunk)"
    )
