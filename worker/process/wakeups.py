"""Waiting for work: LISTEN for new jobs and target changes, or poll where LISTEN cannot work.

A connection pooler in transaction mode (PgBouncer, Supavisor) hands each transaction to
whichever server connection is free: a LISTEN registers on one server connection, which goes
back to the pool at once, and its notifications reach some other client or none. Nothing
errors; the worker would just wait out every poll interval. So the listener checks, once per
process, that a notification it sends itself arrives (`EMBED_LISTEN=auto`, the default); when
none arrives within PROBE_SECONDS it stops listening and polls every POOLED_POLL_SECONDS at most,
re-reading the target registry as often as it would otherwise be told to. `EMBED_LISTEN=false`
skips the check and polls; `true` listens without checking.

The probe uses a channel of its own, so the LISTEN it leaves behind on a pooled server
connection never matches anyone's NOTIFY.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
import uuid
from typing import Any

from worker import db, exceptions
from worker.pipeline.targets import TargetRegistry

logger = logging.getLogger(__name__)

JOBS_CHANNEL = "embeddings_jobs"
TARGETS_CHANNEL = "embeddings_targets"
PROBE_SECONDS = 2.0  # a notification between two connections arrives in milliseconds
POOLED_POLL_SECONDS = 1.0  # polling: at most this long between queue checks
POOLED_REGISTRY_SECONDS = 5.0  # polling: re-read targets this often (no change notifications)


class Listener:
    """`wait` returns on a notification, the stop pipe, or the timeout, whichever comes first.

    `mode` is "auto" (probe, then listen or poll), "true" (listen) or "false" (poll)."""

    def __init__(
        self,
        dsn: str,
        stop: threading.Event,
        wake_fd: int,
        registry: TargetRegistry,
        mode: str = "auto",
    ) -> None:
        self.dsn = dsn
        self.session = db.Session(dsn, "listener", stop)
        self.stop = stop
        self.wake_fd = wake_fd
        self.registry = registry
        self.mode = mode
        self._conn: db.Connection | None = None
        self._registry_read_at = time.monotonic()
        if mode == "false":
            logger.info("LISTEN disabled (EMBED_LISTEN=false): polling the queue")

    @property
    def polling(self) -> bool:
        return self.mode == "false"

    def ensure(self) -> None:
        if self.polling or (self._conn is not None and not self._conn.closed):
            return
        try:
            conn = self.session.get()
            if self.mode == "auto" and not self._probe(conn):
                self.mode = "false"
                self.session.close()
                logger.warning(
                    "LISTEN does not deliver notifications on this connection (a pooler in "
                    "transaction mode?): polling the queue every %.0f s instead; set "
                    "EMBED_LISTEN=false to skip this check",
                    POOLED_POLL_SECONDS,
                )
                return
            self.mode = "true"  # probed once per process: a reconnect just listens again
            conn.add_notify_handler(self._on_notify)
            with db.translated():
                conn.execute(f"LISTEN {JOBS_CHANNEL}")
                conn.execute(f"LISTEN {TARGETS_CHANNEL}")
            self._conn = conn
        except exceptions.ConnectionLost:
            self.session.lost()
            self._conn = None

    def _probe(self, conn: db.Connection) -> bool:
        """Whether a NOTIFY sent from another connection reaches `conn`."""
        channel = f"embed_worker_probe_{uuid.uuid4().hex[:16]}"
        token = uuid.uuid4().hex
        received: list[str] = []

        def on_notify(notify: Any) -> None:
            if notify.channel == channel:
                received.append(notify.payload)

        conn.add_notify_handler(on_notify)
        try:
            with db.translated():
                conn.execute(f"LISTEN {channel}")
            sender = db.connect(self.dsn, connect_timeout=5)
            try:
                with db.translated():
                    sender.execute("SELECT pg_notify(%s, %s)", (channel, token))
            finally:
                sender.close()
            # Wait on the socket alone: a query would go through the pooler to some server
            # connection and could pick up the notification by chance.
            deadline = time.monotonic() + PROBE_SECONDS
            while token not in received and (left := deadline - time.monotonic()) > 0:
                readable, _, _ = select.select([conn.fileno()], [], [], left)
                if readable:
                    with db.translated():
                        conn.execute("SELECT 1")  # delivers the pending notifications
            with db.translated():
                conn.execute(f"UNLISTEN {channel}")
        finally:
            conn.remove_notify_handler(on_notify)
        return token in received

    def _on_notify(self, notify: Any) -> None:
        if notify.channel == TARGETS_CHANNEL:
            self.registry.invalidate()

    def wait(self, timeout: float) -> None:
        fds = [self.wake_fd]
        if self.polling:
            timeout = min(timeout, POOLED_POLL_SECONDS)
            if time.monotonic() - self._registry_read_at >= POOLED_REGISTRY_SECONDS:
                self.registry.invalidate()  # no TARGETS_CHANNEL notifications to tell us
                self._registry_read_at = time.monotonic()
        elif self._conn is not None and not self._conn.closed:
            fds.append(self._conn.fileno())
        readable, _, _ = select.select(fds, [], [], timeout)
        if self.wake_fd in readable:
            os.read(self.wake_fd, 4096)
        if self._conn is not None and self._conn.fileno() in readable:
            try:
                with db.translated():
                    self._conn.execute("SELECT 1")  # delivers the pending notifications
            except exceptions.ConnectionLost:
                self.session.lost()
                self._conn = None

    def close(self) -> None:
        self.session.close()
