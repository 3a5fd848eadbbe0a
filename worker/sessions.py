"""The worker threads' connections: one each, that comes back when lost (`Session`), and waits
for a database that takes writes; woken when the database is reachable again
(worker/outages.py)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import KW_ONLY, dataclass, field

import psycopg
import tenacity

from worker import conninfo, exceptions, metrics, outages
from worker.backoff import Backoff
from worker.db import (
    DEFAULT_LOCK_TIMEOUT_MS,
    Connection,
    connect,
    register_vector_types,
    takes_no_writes,
)

logger = logging.getLogger(__name__)

# 0.5 s doubling to 30 s (times 1 to 1.5), like psycopg_pool: gentle on a database that is
# restarting, with every worker's sessions knocking. A session does not sleep out the rest of
# its wait once the database was reached again: by another connection of this process, or by
# the probe that looks for it meanwhile (worker/outages.py).
RECONNECT = Backoff(0.5, 30.0, spread=(1.0, 1.5))


@dataclass(eq=False, repr=False)  # one per thread, compared by identity; its DSN never printed
class Session:
    """One connection that comes back when lost.

    `get()` returns the live connection, reconnecting with exponential backoff and jitter
    (`RECONNECT`) until it succeeds or `stop` is set; a wait ends early once the database is
    reachable again (another session, /readyz's check or the probe that looks for it while
    sessions wait got through: worker/outages.py). By default it never gives up on its own: a
    worker waits out a database restart instead of crash-looping.
    With `deadline` (seconds) it raises ConnectionLost once that much time has gone by, which is
    what a one-shot run wants: fail with the reason rather than wait for a database that is not
    there.

    With `max_tables`, a connection that has served more different watched tables (targets)
    than that is replaced between two units of work (`served()`): Postgres keeps what a session
    compiled of each table's generated functions, and their plans, until the session ends
    (about 0.7 MB a table in the writer's, 0.2 MB in the fetcher's), and nothing else frees it.
    """

    dsn: str
    name: str
    stop: threading.Event
    _: KW_ONLY
    backoff: Backoff | None = None  # RECONNECT, as it is when get() waits
    vectors: bool = False
    deadline: float | None = None
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS
    max_tables: int = 0  # 0: never replaced for the tables it served
    per_transaction: bool = False  # behind a transaction pooler (EMBED_POOL_MODE): db.connect
    _conn: Connection | None = field(default=None, init=False)
    _tables: set[int] = field(default_factory=set, init=False)  # target ids served on _conn
    _failure: BaseException | None = field(default=None, init=False)  # the last attempt's

    def get(self) -> Connection:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._conn = None
        self._tables.clear()
        for attempt in tenacity.Retrying(
            wait=self.backoff or RECONNECT,
            retry=tenacity.retry_if_exception_type(exceptions.ConnectionLost),
            stop=self._should_give_up,
            sleep=self._sleep,
            before_sleep=self._log_retry,
            reraise=True,
        ):
            with attempt:
                conn = connect(
                    self.dsn,
                    lock_timeout_ms=self.lock_timeout_ms,
                    per_transaction=self.per_transaction,
                )
                try:
                    read_only = takes_no_writes(conn)
                    if read_only is not None:
                        raise exceptions.DatabaseReadOnly(
                            f"{conninfo.describe(self.dsn)} {read_only}"
                        )
                    if self.vectors:
                        register_vector_types(conn)
                except BaseException:
                    conn.close()
                    raise
                self._conn = conn
                # (the other sessions waiting to reconnect retry now)
                outages.reachable(self.dsn)
                if attempt.retry_state.attempt_number > 1:
                    logger.info("%s: reconnected to %s", self.name, conninfo.describe(self.dsn))
        assert self._conn is not None
        return self._conn

    def _should_give_up(self, state: tenacity.RetryCallState) -> bool:
        if self.stop.is_set():
            return True
        elapsed = state.seconds_since_start or 0.0
        return self.deadline is not None and elapsed >= self.deadline

    def _sleep(self, seconds: float) -> None:
        outages.wait_to_reconnect(
            self.dsn, seconds, self.stop, per_transaction=self.per_transaction
        )
        if self.stop.is_set() and self._failure is not None:
            # No attempt after a wait the stop ended (the last one's failure is get()'s):
            # against a host that drops packets it would take its whole connect timeout (10 s)
            # out of the stop's grace period.
            raise self._failure

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        self._failure = error
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

    def served(self, target_ids: Iterable[int]) -> None:
        """Counts the targets a unit of work just done on this connection used. Past
        `max_tables` different ones since it opened, the connection is closed here, outside any
        transaction (a unit of work's own ended with it), and the next `get()` opens a new one."""
        if not self.max_tables:
            return
        self._tables.update(target_ids)
        conn = self.current()
        if conn is None or len(self._tables) <= self.max_tables:
            return
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            return  # (not between units of work: replaced after the next one)
        logger.debug(
            "%s: a new session after %d tables (EMBED_SESSION_MAX_TABLES)",
            self.name,
            len(self._tables),
        )
        metrics.SESSIONS_REPLACED.labels(self.name).inc()
        self.lost()

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
        self._tables.clear()

    def close(self) -> None:
        self.lost()
