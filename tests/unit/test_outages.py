"""The probe's pace while the database is lost (worker/outages.py): every 0.25 s while the
outage is young (10 s), then a fortieth of its age, never more than 2 s apart, always jittered."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker import db, exceptions, outages


@given(age=st.floats(0, 1e9), seed=st.integers(0, 2**32))
def test_the_probe_is_a_fortieth_of_the_outage_within_its_bounds(age: float, seed: int) -> None:
    interval = outages.probe_interval(age, random.Random(seed))
    low, high = outages.PROBE_JITTER
    assert low * outages.PROBE_SHORTEST <= interval <= high * outages.PROBE_LONGEST
    base = min(outages.PROBE_LONGEST, max(outages.PROBE_SHORTEST, age * outages.PROBE_SHARE))
    assert low * base - 1e-9 <= interval <= high * base + 1e-9


def test_a_young_outage_is_probed_four_times_a_second_a_long_one_every_two() -> None:
    rng = random.Random(1)
    assert all(0.2 <= outages.probe_interval(age, rng) <= 0.3 for age in (0, 1, 5, 10))
    assert all(1.6 <= outages.probe_interval(age, rng) <= 2.4 for age in (80, 600, 86400))


def test_a_server_turning_connections_away_is_probed_every_two_seconds_at_once() -> None:
    rng = random.Random(1)
    assert all(1.6 <= outages.probe_interval(age, rng, busy=True) <= 2.4 for age in (0, 1, 600))


@pytest.mark.parametrize(
    "message",
    [
        "FATAL:  sorry, too many clients already",
        "FATAL:  remaining connection slots are reserved for non-replication superuser connections",
        'FATAL:  too many connections for role "worker"',
        'FATAL:  too many connections for database "app"',
        "FATAL:  the database system is starting up",
        "FATAL:  the database system is shutting down",
        "FATAL:  the database system is in recovery mode",
        "FATAL:  the database system is not yet accepting connections",
    ],
)
def test_a_server_that_turns_connections_away_for_now_is_busy(message: str) -> None:
    dsn = "postgresql://worker@db.example:5432/app"
    failure = db.connect_failure(
        dsn, f'connection to server at "db.example", port 5432 failed: {message}'
    )
    assert isinstance(failure, exceptions.ServerBusy), failure


@pytest.mark.parametrize(
    "message",
    [
        "Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?",
        "server closed the connection unexpectedly",
        'FATAL:  database "app" does not exist',
    ],
)
def test_other_failures_are_no_busy_server(message: str) -> None:
    failure = db.connect_failure("postgresql://worker@db.example/app", message)
    assert type(failure) is exceptions.ConnectionLost, failure
