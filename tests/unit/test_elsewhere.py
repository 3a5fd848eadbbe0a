"""How long `run --once` waits for work another session holds and does not move
(worker/process/elsewhere.py; the waits themselves: tests/integration/test_inbox.py and
test_backfill.py)."""

from __future__ import annotations

import pytest

from worker.process.elsewhere import WorkElsewhere


@pytest.mark.parametrize(
    ("owner_code_seconds", "stall_seconds"), [(1.0, 5.0), (0.2, 1.0), (0.05, 1.0), (3.0, 15.0)]
)
def test_the_stall_is_five_step_bounds_and_at_least_a_second(
    owner_code_seconds: float, stall_seconds: float
) -> None:
    assert WorkElsewhere("q", owner_code_seconds).stall_seconds == pytest.approx(stall_seconds)
