"""What stops the progress of the worker's targets (sql/52_stopped.sql: a problem, a deferral,
a model change's swap waiting for its table lock, a stalled backfill), read by the keeper every
few seconds: the worker's /readyz shows it and the embed_worker_target_stopped gauge exports it,
from the same rows `embed-worker status` and `doctor` show."""

from __future__ import annotations

import threading
from typing import Any

from worker import db, metrics, queries

REFRESH_SECONDS = 5.0


class StoppedTargets:
    """The stopped states of the targets of one queue, as last read."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self._lock = threading.Lock()
        self._current: dict[str, list[dict[str, Any]]] = {}
        self._exported: set[tuple[str, str]] = set()

    def refresh(self, conn: db.Connection) -> None:
        with db.translated():
            rows = conn.execute(
                queries.compose("stopped_targets"), {"queue": self.queue}
            ).fetchall()
        current: dict[str, list[dict[str, Any]]] = {}
        for target, state, reason, fix, since in rows:
            current.setdefault(target, []).append(
                {"state": state, "reason": reason, "fix": fix, "since": since.isoformat()}
            )
        exported = {(target, stop["state"]) for target, stops in current.items() for stop in stops}
        for target, state in self._exported - exported:
            metrics.target_stopped(target, state, stopped=False)
        for target, state in exported:
            metrics.target_stopped(target, state, stopped=True)
        with self._lock:
            self._current = current
            self._exported = exported

    def current(self) -> dict[str, list[dict[str, Any]]]:
        """target name -> its stopped states ({state, reason, fix, since}), as last read."""
        with self._lock:
            return dict(self._current)
