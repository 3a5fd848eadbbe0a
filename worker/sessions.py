"""The worker threads' connections: one each, that comes back when lost (`Session`), and waits
for a database that takes writes."""

from __future__ import annotations

import logging
import threading
from contextlib import suppress
from dataclasses import KW_ONLY, dataclass, field

import psycopg
import tenacity

from worker import exceptions
from worker.backoff import Backoff
from worker.db import (
    DEFAULT_LOCK_TIMEOUT_MS,
    Connection,
    connect,
    describe,
    register_vector_types,
    takes_no_writes,
)

logger = logging.getLogger(__name__)


@dataclass(eq=False, repr=False)  # one per thread, compared by identity; its DSN never printed
class Session:
    """One connection that comes back when lost.

    `get()` returns the live connection, reconnecting with exponential backoff and jitter
    (0.5 s doubling to 30 s, like psycopg_pool) until it succeeds or `stop` is set. By default it
    never gives up on its own: a worker waits out a database restart instead of crash-looping.
    With `deadline` (seconds) it raises ConnectionLost once that much time has gone by, which is
    what a one-shot run wants: fail with the reason rather than wait for a database that is not
    there.
    """

    dsn: str
    name: str
    stop: threading.Event
    _: KW_ONLY
    max_wait: float = 30.0
    vectors: bool = False
    deadline: float | None = None
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS
    _conn: Connection | None = field(default=None, init=False)

    def get(self) -> Connection:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._conn = None
        for attempt in tenacity.Retrying(
            wait=Backoff(0.5, self.max_wait, spread=(1.0, 1.5)),
            retry=tenacity.retry_if_exception_type(exceptions.ConnectionLost),
            stop=self._should_give_up,
            sleep=self._sleep,
            before_sleep=self._log_retry,
            reraise=True,
        ):
            with attempt:
                conn = connect(self.dsn, lock_timeout_ms=self.lock_timeout_ms)
                try:
                    read_only = takes_no_writes(conn)
                    if read_only is not None:
                        raise exceptions.DatabaseReadOnly(f"{describe(self.dsn)} {read_only}")
                    if self.vectors:
                        register_vector_types(conn)
                except BaseException:
                    conn.close()
                    raise
                self._conn = conn
                if attempt.retry_state.attempt_number > 1:
                    logger.info("%s: reconnected to %s", self.name, describe(self.dsn))
        assert self._conn is not None
        return self._conn

    def _should_give_up(self, state: tenacity.RetryCallState) -> bool:
        if self.stop.is_set():
            return True
        elapsed = state.seconds_since_start or 0.0
        return self.deadline is not None and elapsed >= self.deadline

    def _sleep(self, seconds: float) -> None:
        self.stop.wait(seconds)  # a stop request cuts the wait short

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        delay = state.next_action.sleep if state.next_action else 0.0
        if isinstance(
            error,
            exceptions.AuthenticationFailed
            | exceptions.DatabaseReadOnly
            | exceptions.SessionTimedOut,
        ):
            # (not down: misconfigured, or a failover not yet over)
            logger.error("%s: %s; retrying in %.1f s", self.name, error, delay)
            return
        logger.warning("%s: database unavailable (%s); retrying in %.1f s", self.name, error, delay)

    def current(self) -> Connection | None:
        """The connection now open, if any (without connecting)."""
        conn = self._conn
        return conn if conn is not None and not conn.closed else None

    def lost(self) -> None:
        """Drops the connection after a failure; the next `get()` reconnects."""
        if self._conn is not None:
            with suppress(psycopg.Error):
                self._conn.close()
        self._conn = None

    def close(self) -> None:
        self.lost()
