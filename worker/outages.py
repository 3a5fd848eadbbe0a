"""A database this process lost, per DSN: when a connection of the process reached it again
(`reachable`), the reconnect waits that end then (`wait_to_reconnect`), and the one probe that
looks for it while anyone waits.

A session's reconnect backoff (worker/sessions.py: RECONNECT) grows to 30 s to be gentle on a
restarting database with every worker's sessions knocking; alone, it found a database that came
back only at its next attempt, seconds later (docs/reliability.md, "Under faults"). The probe
is one connection attempt at a time per process and database, not one per thread: every 0.25 s
for the first 10 s of an outage, then a fortieth of its age (at most 2 s), jittered by ±20%:
what it adds to an outage is under 0.3 s or 3% of it (at most 2.4 s). When it gets through,
every waiting session retries at once.

A server that answers and turns connections away for now (its slots full, "too many clients";
starting up, shutting down or in recovery) ends the outage by itself, but four knocks a second
only add to what it is short of: while it answers so, the probe knocks at its slowest pace (every
2 s, jittered). A server that answers and refuses (wrong password, read-only, a session cut
short) is no outage that ends by itself: the probe leaves it to the sessions' own backoff until
one gets through.

The probe is a thread of every worker whose sessions wait (Worker.threads, `probe_of`): joined
on stop with the others, and it gives up a connection attempt under way at once when nobody
waits any longer (_knock), not after its connect timeout.
"""

from __future__ import annotations

import enum
import random
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import pq
from psycopg.conninfo import make_conninfo

from worker import conninfo, db, exceptions

# How often a session waiting out its backoff looks whether the database was reached meanwhile
# (its stop event cuts the wait short at once).
REACHED_CHECK_SECONDS = 0.1
# The probe's pace: the outage's age times PROBE_SHARE, within these bounds, times the jitter
# (which keeps the probes of workers that lost the database together from knocking in step).
PROBE_SHORTEST = 0.25
PROBE_LONGEST = 2.0
PROBE_SHARE = 0.025
PROBE_JITTER = (0.8, 1.2)
PROBE_CONNECT_TIMEOUT = 2.0  # seconds (a host that drops packets ends it)
PROBE_THREAD = "reconnect-probe"
# How often a knock asks whether to give up while the server has not answered yet.
KNOCK_CHECK_SECONDS = 0.1


def probe_interval(age: float, rng: random.Random | None = None, *, busy: bool = False) -> float:
    """Seconds from one probe to the next, `age` seconds into an outage; `busy`: the server
    turned the last knock away for now (ServerBusy), the slowest pace at once."""
    base = PROBE_LONGEST if busy else min(PROBE_LONGEST, max(PROBE_SHORTEST, age * PROBE_SHARE))
    return base * (rng or _RANDOM).uniform(*PROBE_JITTER)


class Found(enum.Enum):
    """What one look of the probe found."""

    REACHED = "answers and takes writes"
    SILENT = "does not answer (yet)"
    BUSY = "answers and turns connections away for now"
    REFUSED = "answers and refuses"
    GIVEN_UP = "nobody waits any longer"


@dataclass
class _Database:
    """What the process knows of one DSN's database (guarded by _CHANGED)."""

    reached: int = 0  # how many times a connection of the process got through
    waiting: int = 0  # sessions in their reconnect backoff now
    down_since: float | None = None  # (time.monotonic()) the first wait since it was reached
    probe: threading.Thread | None = None  # None from the moment it decided to end
    thread: threading.Thread | None = None  # the last probe's, until it ended (probe_of)
    refused: bool = False  # the probe found it answering and refusing: left to the sessions


_CHANGED = threading.Condition()
_DATABASES: dict[str, _Database] = {}
_RANDOM = random.Random()  # noqa: S311 - jitter, not secrecy


def _database(dsn: str) -> _Database:
    return _DATABASES.setdefault(dsn, _Database())


def _note_reached(state: _Database) -> None:
    state.reached += 1
    state.down_since = None
    state.refused = False
    _CHANGED.notify_all()


def probe_of(dsn: str) -> threading.Thread | None:
    """The thread of the probe that looks for `dsn`'s database, while it runs."""
    with _CHANGED:
        state = _DATABASES.get(dsn)
        thread = state.thread if state is not None else None
    return thread if thread is not None and thread.is_alive() else None


def reachable(dsn: str) -> None:
    """The database of `dsn` answered and takes writes (a session connected, /readyz's check,
    the probe): the sessions waiting to reconnect to it retry now."""
    with _CHANGED:
        _note_reached(_database(dsn))


def wait_to_reconnect(
    dsn: str, seconds: float, stop: threading.Event, *, per_transaction: bool = False
) -> None:
    """Waits `seconds` (a reconnect's backoff), less when `stop` is set or `dsn` is reached;
    meanwhile the probe looks for the database (connecting as db.connect does, with
    `per_transaction`)."""
    with _CHANGED:
        state = _database(dsn)
        before = state.reached
        state.waiting += 1
        if state.down_since is None:
            state.down_since = time.monotonic()
        if state.probe is None and not state.refused:
            state.probe = threading.Thread(
                target=_probe,
                args=(dsn, state, before, per_transaction),
                name=PROBE_THREAD,
                daemon=True,
            )
            state.thread = state.probe
            state.probe.start()
    deadline = time.monotonic() + seconds
    try:
        while not stop.is_set() and state.reached == before:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            stop.wait(min(remaining, REACHED_CHECK_SECONDS))
    finally:
        with _CHANGED:
            state.waiting -= 1
            if stop.is_set():
                if not state.waiting:
                    state.down_since = None  # (nobody waits it out any longer)
                # The probe ends at once when nobody is left waiting. (A session leaving its
                # wait to try again comes back to it: the probe goes on meanwhile.)
                _CHANGED.notify_all()


def _probe(dsn: str, state: _Database, before: int, per_transaction: bool) -> None:
    """The probe's thread: looks for the database until it is reached (count `before` moved),
    nobody waits for it any longer, or it answers and refuses. Silent: the sessions log what
    they see."""

    def over() -> bool:  # (read without the lock by _knock: a stale answer costs 0.1 s)
        return not state.waiting or state.reached != before

    busy = False
    try:
        while True:
            with _CHANGED:
                down_since = state.down_since
                age = 0.0 if down_since is None else time.monotonic() - down_since
                _CHANGED.wait_for(over, timeout=probe_interval(age, busy=busy))
                if over():
                    state.probe = None
                    return
            found = _look(dsn, per_transaction, over)
            if found in (Found.SILENT, Found.BUSY, Found.GIVEN_UP):
                busy = found is Found.BUSY  # (given up: the next check ends the probe)
                continue
            with _CHANGED:  # (one step: a session that waits again from now on starts a probe)
                if found is Found.REACHED:
                    _note_reached(state)
                else:
                    state.refused = True
                state.probe = None
                return
    except BaseException:
        with _CHANGED:
            state.probe = None  # (a bug of ours: the next wait starts another probe)
        raise


def _look(dsn: str, per_transaction: bool, over: Callable[[], bool]) -> Found:
    """Whether the database answers and takes writes: a knock first, given up once `over()`,
    then (it answered) a session as the sessions make theirs, to ask whether it takes writes."""
    try:
        if not _knock(dsn, timeout=PROBE_CONNECT_TIMEOUT, give_up=over):
            return Found.GIVEN_UP
        with db.connect(dsn, connect_timeout=2, per_transaction=per_transaction) as conn:
            return Found.REFUSED if db.takes_no_writes(conn) else Found.REACHED
    except exceptions.ServerBusy:
        return Found.BUSY
    except (
        exceptions.AuthenticationFailed,
        exceptions.SessionTimedOut,
        exceptions.DatabaseReadOnly,
    ):
        return Found.REFUSED
    except exceptions.ConnectionLost:
        return Found.SILENT
    except exceptions.EmbedWorkerError:
        return Found.REFUSED


def _knock(dsn: str, *, timeout: float, give_up: Callable[[], bool]) -> bool:
    """One connection attempt to `dsn`, made as db.connect() makes one but given up as soon as
    `give_up()` says so (asked every KNOCK_CHECK_SECONDS): db.connect() waits out its whole
    connect timeout (libpq's least is 2 s) for a host that drops packets. True once the server
    accepted a session (closed at once: no statement is sent), False when given up; a failure
    raises as db.connect()'s does, `timeout` (seconds) passed as ConnectionLost."""
    try:
        params = make_conninfo(dsn, application_name=db.APPLICATION_NAME)
    except psycopg.ProgrammingError as exc:
        raise exceptions.ConfigError(f"invalid DATABASE_URL: {conninfo.redact(str(exc))}") from None
    deadline = time.monotonic() + timeout
    pgconn = pq.PGconn.connect_start(params.encode())
    try:
        # (libpq: after PQconnectStart, poll as if PQconnectPoll had said WRITING)
        status = pq.PollingStatus.FAILED
        if pgconn.status != pq.ConnStatus.BAD:
            status = pq.PollingStatus.WRITING
        while status != pq.PollingStatus.OK:
            if status == pq.PollingStatus.FAILED:
                raise db.connect_failure(dsn, pgconn.get_error_message())
            if give_up():
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                raise exceptions.ConnectionLost(
                    f"cannot connect to {conninfo.describe(dsn)}: timeout expired"
                )
            try:
                sock = [pgconn.socket]  # (it may change: libpq tries the DSN's hosts in turn)
            except psycopg.OperationalError:
                raise db.connect_failure(dsn, pgconn.get_error_message()) from None
            reading = status == pq.PollingStatus.READING
            wait = min(left, KNOCK_CHECK_SECONDS)
            select.select(sock if reading else [], [] if reading else sock, [], wait)
            status = pq.PollingStatus(pgconn.connect_poll())
        return True
    finally:
        pgconn.finish()
