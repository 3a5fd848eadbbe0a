"""The one-line progress display of `run --once` on a terminal.

Log records and the progress line share stderr from different threads. Each log handler that
writes to stderr gets a stream that erases the progress line first, inside the handler's own
write: an erase done anywhere else (a logging filter runs before the handler takes its lock)
could be followed by a progress redraw before the record, gluing the record onto it.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, TextIO

from worker import db, queries

if TYPE_CHECKING:
    from worker.pipeline.lanes import Lane

ERASE = "\r\x1b[K"


class ErasingStream:
    """A stream that clears the progress line, if drawn, before anything else is written."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.lock = threading.Lock()
        self.drawn = False

    def write(self, text: str) -> int:
        with self.lock:
            if self.drawn:
                self.stream.write(ERASE)
                self.drawn = False
            return self.stream.write(text)

    def draw(self, line: str) -> None:
        with self.lock:
            self.stream.write(ERASE + line)
            self.stream.flush()
            self.drawn = True

    def flush(self) -> None:
        self.stream.flush()


class ProgressLine:
    """Rows done (`rows_done()`, counted by the writer), their rate, and the keys still
    pending in `lanes`' queues."""

    def __init__(self, lanes: Iterable[Lane], rows_done: Callable[[], int]) -> None:
        self.rows_done = rows_done
        self.started = time.monotonic()
        # Both lanes: the live queue and its backfill lane (worker/pipeline/lanes.py).
        self.pending_queries = [
            (queries.compose("pending_keys", queue_table=lane.queue.table), lane.queue.name)
            for lane in lanes
        ]
        self.out = ErasingStream(sys.stderr)
        self._swapped: list[logging.StreamHandler[TextIO]] = []
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
                handler.setStream(self.out)
                self._swapped.append(handler)

    def show(self, conn: db.Connection) -> None:
        pending = 0
        with db.translated():
            for query, queue in self.pending_queries:
                row = conn.execute(query, {"queue": queue}).fetchone()
                pending += int(row[0]) if row else 0
        done = self.rows_done()
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = done / elapsed
        eta = f"{pending / rate:,.0f} s" if rate > 0 else "?"
        self.out.draw(
            f"embedded {done:,} rows · {rate:,.1f} rows/s · {pending:,} pending · ETA {eta}"
        )

    def close(self) -> None:
        for handler in self._swapped:
            handler.setStream(self.out.stream)
        done = self.rows_done()
        elapsed = max(time.monotonic() - self.started, 1e-6)
        self.out.draw(
            f"embedded {done:,} rows in {elapsed:,.1f} s ({done / elapsed:,.1f} rows/s)\n"
        )
