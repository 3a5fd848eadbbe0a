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

A server that answers and refuses (wrong password, read-only, a session cut short) is no outage
that ends by itself: the probe leaves it to the sessions' own backoff until one gets through.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass

from worker import db, exceptions

# How often a session waiting out its backoff looks whether the database was reached meanwhile
# (its stop event cuts the wait short at once).
REACHED_CHECK_SECONDS = 0.1
# The probe's pace: the outage's age times PROBE_SHARE, within these bounds, times the jitter
# (which keeps the probes of workers that lost the database together from knocking in step).
PROBE_SHORTEST = 0.25
PROBE_LONGEST = 2.0
PROBE_SHARE = 0.025
PROBE_JITTER = (0.8, 1.2)
PROBE_CONNECT_TIMEOUT = 2  # seconds; libpq's least (a host that drops packets ends it)
PROBE_THREAD = "reconnect-probe"


def probe_interval(age: float, rng: random.Random | None = None) -> float:
    """Seconds from one probe to the next, `age` seconds into an outage."""
    base = min(PROBE_LONGEST, max(PROBE_SHORTEST, age * PROBE_SHARE))
    return base * (rng or _RANDOM).uniform(*PROBE_JITTER)


@dataclass
class _Database:
    """What the process knows of one DSN's database (guarded by _CHANGED)."""

    reached: int = 0  # how many times a connection of the process got through
    waiting: int = 0  # sessions in their reconnect backoff now
    down_since: float | None = None  # (time.monotonic()) the first wait since it was reached
    probe: threading.Thread | None = None
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
    try:
        while True:
            with _CHANGED:
                down_since = state.down_since
                age = 0.0 if down_since is None else time.monotonic() - down_since
                _CHANGED.wait_for(
                    lambda: not state.waiting or state.reached != before,
                    timeout=probe_interval(age),
                )
                if not state.waiting or state.reached != before:
                    state.probe = None
                    return
            found = _look(dsn, per_transaction)
            if found is False:
                continue
            with _CHANGED:  # (one step: a session that waits again from now on starts a probe)
                if found:
                    _note_reached(state)
                else:
                    state.refused = True
                state.probe = None
                return
    except BaseException:
        with _CHANGED:
            state.probe = None  # (a bug of ours: the next wait starts another probe)
        raise


def _look(dsn: str, per_transaction: bool) -> bool | None:
    """True: the database answers and takes writes; False: it does not answer (yet); None: it
    answers and refuses."""
    try:
        with db.connect(
            dsn, connect_timeout=PROBE_CONNECT_TIMEOUT, per_transaction=per_transaction
        ) as conn:
            return None if db.takes_no_writes(conn) else True
    except (
        exceptions.AuthenticationFailed,
        exceptions.SessionTimedOut,
        exceptions.DatabaseReadOnly,
    ):
        return None
    except exceptions.ConnectionLost:
        return False
    except exceptions.EmbedWorkerError:
        return None
