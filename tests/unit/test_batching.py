"""How inputs are cut into inference calls (worker/models/batching.py), on token counts alone:
a few inputs at the cheapest cuts, weighed against every way there is; many greedily; the
limits kept either way. The embedder's own tests (test_embedder.py) run the calls."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.models.batching import (
    CALL_COST_TOKENS,
    EXACT_INPUTS,
    MAX_PADDING,
    Encoding,
    TokenBatch,
    batches,
)


@dataclass
class _Tokens:
    """An encoding as batches() reads it: its ids, here only counted."""

    ids: list[int]
    type_ids: list[int] = field(default_factory=list)
    offsets: list[tuple[int, int]] = field(default_factory=list)
    special_tokens_mask: list[int] = field(default_factory=list)
    overflowing: list[object] = field(default_factory=list)


def _encodings(lengths: list[int]) -> list[Encoding]:
    return [_Tokens(ids=[0] * n) for n in lengths]


def _cost(runs: list[list[int]]) -> int:
    return sum(CALL_COST_TOKENS + len(run) * max(run) for run in runs)


def _allowed(run: list[int], budget: int, attention: int, allowance: int) -> bool:
    padded = len(run) * max(run)
    return len(run) == 1 or (
        padded <= budget
        and padded * max(run) <= attention
        and (padded <= allowance or padded <= (1 + MAX_PADDING) * sum(run))
    )


def _every_split(lengths: list[int]) -> list[list[list[int]]]:
    """Every way to cut the sorted lengths into runs."""
    ordered = sorted(lengths)
    ways = []
    for cuts in itertools.product([False, True], repeat=len(ordered) - 1):
        runs, run = [], [ordered[0]]
        for length, cut in zip(ordered[1:], cuts, strict=True):
            if cut:
                runs.append(run)
                run = []
            run.append(length)
        ways.append([*runs, run])
    return ways


def _runs(produced: list[TokenBatch]) -> list[list[int]]:
    return [[len(e.ids) for e in batch.encodings] for batch in produced]


limits = st.fixed_dictionaries(
    {
        "token_budget": st.sampled_from([64, 300, 4096]),
        "attention_budget": st.sampled_from([2**12, 2**18]),
        "padding_allowance": st.sampled_from([0, 128, 512]),
    }
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 600), min_size=1, max_size=9), limits)
def test_few_inputs_are_cut_as_cheaply_as_any_split_allows(
    lengths: list[int], limits: dict[str, int]
) -> None:
    produced = list(
        batches(
            _encodings(lengths),
            limits["token_budget"],
            attention_budget=limits["attention_budget"],
            padding_allowance=limits["padding_allowance"],
        )
    )

    runs = _runs(produced)
    assert sorted(np.concatenate([b.rows for b in produced]).tolist()) == list(range(len(lengths)))
    assert [n for run in runs for n in run] == sorted(lengths)  # runs of the sorted inputs
    budgets = (limits["token_budget"], limits["attention_budget"], limits["padding_allowance"])
    assert all(_allowed(run, *budgets) for run in runs)
    allowed = [w for w in _every_split(lengths) if all(_allowed(r, *budgets) for r in w)]
    assert _cost(runs) == min(_cost(way) for way in allowed)
    cheapest = [way for way in allowed if _cost(way) == _cost(runs)]
    assert len(runs) == min(len(way) for way in cheapest)  # a tie goes to fewer calls


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 600), min_size=EXACT_INPUTS + 1, max_size=3 * EXACT_INPUTS))
def test_many_inputs_are_cut_greedily_within_the_limits(lengths: list[int]) -> None:
    produced = list(batches(_encodings(lengths), 4096, padding_allowance=512))

    runs = _runs(produced)
    assert [n for run in runs for n in run] == sorted(lengths)
    assert all(_allowed(run, 4096, 2**18, 512) for run in runs)
    for run, following in itertools.pairwise(runs):  # each run closed by the next input
        assert not _allowed([*run, following[0]], 4096, 2**18, 512)


def test_eight_questions_go_in_the_two_calls_that_cost_least() -> None:
    """Eight questions as the search bench asks them (8 to 24 tokens): one call pads 40% of
    its 192 tokens; the cheapest ways are two calls, at 191 token-costs against 214."""
    lengths = [19, 9, 17, 24, 8, 8, 14, 15]

    produced = list(batches(_encodings(lengths), 4096))

    runs = _runs(produced)
    assert len(runs) == 2
    assert _cost(runs) == 191 < _cost([sorted(lengths)]) == 214
    for batch, run in zip(produced, runs, strict=True):
        assert sorted(lengths[i] for i in batch.rows) == run
