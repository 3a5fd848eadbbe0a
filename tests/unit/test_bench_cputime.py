"""The benchmarks' CPU time from /proc (bench/cputime.py), without a database: a child process
that burns CPU stands for a backend, this process for the postmaster whose children count."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from bench import cputime

BURN = 0.3  # CPU seconds the child spends before it waits
# Spends BURN seconds of CPU, says so, and waits for its stdin to close.
CHILD = f"""
import sys, time
while time.process_time() < {BURN}:
    pass
print("burnt", flush=True)
sys.stdin.read()
"""

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@pytest.fixture
def burnt() -> Iterator[subprocess.Popen[str]]:
    """A child that has spent BURN seconds of CPU and waits."""
    with subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:  # its pipes closed, and it waited for, on the way out
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "burnt"
            yield child
        finally:
            if child.poll() is None:
                child.kill()


def _eventually_at_least(read: Callable[[], float], least: float) -> float:
    """`read()` once it is at least `least` (the kernel's tick accounting lags a little), or
    what it reads at the deadline."""
    deadline = time.monotonic() + 5
    while (value := read()) < least and time.monotonic() < deadline:
        time.sleep(0.01)
    return value


def test_a_process_s_cpu_seconds_count_what_it_spent(burnt: subprocess.Popen[str]) -> None:
    spent = _eventually_at_least(lambda: cputime.process_seconds(burnt.pid), BURN * 0.8)
    assert BURN * 0.8 <= spent < BURN + 2  # its start-up too, not the test's


def test_a_process_that_is_gone_has_spent_nothing() -> None:
    with subprocess.Popen([sys.executable, "-c", "pass"]) as child:
        pass
    assert cputime.process_seconds(child.pid) == 0.0


def test_a_server_s_seconds_count_its_live_children_and_those_that_exited(
    burnt: subprocess.Popen[str],
) -> None:
    own = cputime.process_seconds(os.getpid())
    live = _eventually_at_least(
        lambda: cputime.server_seconds(os.getpid()) or 0.0, own + BURN * 0.8
    )
    assert live >= own + BURN * 0.8
    assert burnt.stdin is not None
    burnt.stdin.close()
    burnt.wait()  # reaped: its time is in this process's children's time now
    after = cputime.server_seconds(os.getpid())
    assert after is not None and after >= own + BURN * 0.8


def test_a_server_elsewhere_has_no_cpu_figures() -> None:
    assert cputime.server_seconds(None) is None
