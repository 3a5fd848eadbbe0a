"""The probe's pace while the database is lost (worker/outages.py): every 0.25 s while the
outage is young (10 s), then a fortieth of its age, never more than 2 s apart, always jittered."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from worker import outages


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
