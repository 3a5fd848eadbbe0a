"""Inputs cut into inference calls: sorted by token count, batched by a token budget (rows times
padded length), an attention budget and a cap on padding, then padded to each batch's longest
input. A few inputs (questions, a small fetch) are cut where the calls cost least, a call's own
cost counted (CALL_COST_TOKENS); more are cut greedily. The embedder (worker/models/embedder.py)
runs each batch; results go back in the caller's order through `TokenBatch.rows`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

# Rows x padded length per inference call. Measured with gte-small's architecture on the 2-core
# benchmark machine (bench/embedder.py), padding capped as below: speed is flat from 1024 to
# 32768 (141-153 texts/s on the mixed corpus, 12.1-13.2 texts/s on 512-token texts, within
# noise), while memory grows with the budget: attention scores alone take ~50 bytes x budget x
# sequence length (100 MB per layer at 4096 x 512, 800 MB at 32768 x 512). 4096 keeps that low
# and still packs 256 rows of short (16-token) texts into one call.
DEFAULT_TOKEN_BUDGET = 4096
# Rows x length² per call. Speed is the same at 512-token inputs for 1 to 8 rows per call, but
# attention scores and their softmax take ~100 bytes x heads x rows x length² at once: capping
# the cells at 2^18 (one 512-token row, four of 256, sixteen of 128) bounds the embedder's peak
# memory at the same speed (docs/performance.md, "Figures behind the code's choices").
ATTENTION_BUDGET = 2**18

# Most padding a batch may carry, as a share of its real tokens. Sorting alone leaves a long run
# of short texts padded to the longest one the budget admits; a 5% cap pads least and was the
# fastest setting at every budget measured (docs/performance.md, "Figures behind the code's
# choices").
MAX_PADDING = 0.05
# Padded tokens a call may hold whatever its padding: below this, an inference call's fixed
# cost outweighs the padding's, so a batch of short inputs (questions: 8 to 25 tokens, batched
# by worker/models/query_batch.py) is not cut into a call per length. Eight questions cut by the
# padding cap alone took 6 calls, 16% slower than one (all-MiniLM-L6-v2, 2 threads, AMD EPYC,
# 2026-11-25); the pipeline's calls (4096 tokens) are cut by the cap as before past this.
CALL_TOKENS = 512
# What an inference call costs beyond its padded tokens, counted in tokens: every call reads all
# of the model's weights from memory once (42 MB for all-MiniLM-L6-v2), however few its inputs.
# One 1-token input took 2.3 ms of CPU, each padded token 0.107 ms more (all-MiniLM-L6-v2, 1 and
# 2 intra-op threads, AMD EPYC with AVX-512, 2026-11-26). Weights and work per token grow
# together with a model's size, so the ratio is the machine's (its arithmetic over its memory
# bandwidth) more than the model's: about half as many tokens where only AVX2 computes.
CALL_COST_TOKENS = 22
# Inputs cut at the cheapest places (_cheapest_cuts weighs every way); more are cut greedily.
# Questions (at most EMBED_QUERY_BATCH_SIZE, 32 by default) and the pipeline's small fetches
# come under it. Cut greedily, eight questions went in one call 40% padding; random batches of
# 16 and 32 questions took 10-14% less CPU per question cut at the cheapest places, and
# fetches of 16 docstrings 5-15% less (all-MiniLM-L6-v2, 2 threads, AMD EPYC, 2026-11-26).
EXACT_INPUTS = 64


class Encoding(Protocol):
    """What the tokenizer gives for one text (tokenizers.Encoding)."""

    @property
    def ids(self) -> list[int]: ...
    @property
    def type_ids(self) -> list[int]: ...
    @property
    def offsets(self) -> list[tuple[int, int]]: ...
    @property
    def special_tokens_mask(self) -> list[int]: ...
    @property
    def overflowing(self) -> list[Any]: ...


@dataclass(frozen=True)
class TokenBatch:
    """Inputs embedded in one inference call."""

    rows: npt.NDArray[np.intp]  # positions in the caller's list
    encodings: list[Encoding]
    length: int  # padded length: the longest input of the batch


def batches(
    encodings: list[Encoding],
    token_budget: int,
    *,
    max_padding: float = MAX_PADDING,
    attention_budget: int = ATTENTION_BUDGET,
    padding_allowance: int = CALL_TOKENS,
) -> Iterator[TokenBatch]:
    """Shortest first, each batch a run of the inputs sorted by length, within the limits:
    rows x padded length at most `token_budget`; rows x length² (the attention score cells per
    head, which dominate memory for long inputs) at most `attention_budget`; and padding at most
    `max_padding` of the batch's real tokens (without it, a long tail of short texts would be
    padded to the longest that still fits the budget), except in a call of at most
    `padding_allowance` padded tokens. An input longer than the budgets gets a batch of its own.

    Up to EXACT_INPUTS inputs are cut where the calls cost least in all (padded tokens, and
    CALL_COST_TOKENS per call); more are cut greedily: a batch closes when one more input would
    break a limit.
    """
    lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
    order = np.argsort(lengths, kind="stable")
    limits = _Limits(token_budget, attention_budget, max_padding, padding_allowance)
    cut = _cheapest_cuts if len(order) <= EXACT_INPUTS else _greedy_cuts
    for start, end in cut([int(n) for n in lengths[order]], limits):
        yield _batch(order[start:end], encodings, lengths)


@dataclass(frozen=True)
class _Limits:
    token_budget: int
    attention_budget: int
    max_padding: float
    padding_allowance: int

    def beyond_budgets(self, rows: int, length: int) -> bool:
        """Whether `rows` inputs padded to `length` break a budget (more rows only break it
        more). One input never does: it gets a call of its own whatever its length."""
        padded = rows * length
        return rows > 1 and (padded > self.token_budget or padded * length > self.attention_budget)

    def padded_too_much(self, rows: int, length: int, real: int) -> bool:
        padded = rows * length
        return (
            rows > 1 and padded > self.padding_allowance and padded > (1 + self.max_padding) * real
        )

    def allows(self, rows: int, length: int, real: int) -> bool:
        return not (self.beyond_budgets(rows, length) or self.padded_too_much(rows, length, real))


def _greedy_cuts(lengths: list[int], limits: _Limits) -> list[tuple[int, int]]:
    """Runs of `lengths` (ascending), each closed when one more input would break a limit."""
    runs = []
    start = real = 0
    for end, length in enumerate(lengths):  # sorted: each new input is the run's longest
        if not limits.allows(end - start + 1, length, real + length):
            runs.append((start, end))
            start, real = end, 0
        real += length
    if start < len(lengths):
        runs.append((start, len(lengths)))
    return runs


def _cheapest_cuts(lengths: list[int], limits: _Limits) -> list[tuple[int, int]]:
    """Runs of `lengths` (ascending) within the limits whose calls cost least in all: each
    costs CALL_COST_TOKENS plus its rows times its longest. Every split of the sorted inputs is
    weighed (dynamic programming: the cheapest way to embed the first `end` inputs ends with
    one run, and before it the cheapest way for the inputs before that run); an ordering other
    than by length never pads less. Where calls cost the same, the one with fewer calls wins."""
    # Of the first `end` inputs: (cost, calls) of the cheapest way, and where its last run starts.
    cheapest = [(0, 0)] * (len(lengths) + 1)
    run_start = [0] * (len(lengths) + 1)
    for end in range(1, len(lengths) + 1):
        length = lengths[end - 1]
        best: tuple[int, int] | None = None
        real = 0
        for start in range(end - 1, -1, -1):
            rows = end - start
            real += lengths[start]
            if limits.beyond_budgets(rows, length):
                break
            if limits.padded_too_much(rows, length, real):
                continue
            cost, calls = cheapest[start]
            way = (cost + CALL_COST_TOKENS + rows * length, calls + 1)
            if best is None or way < best:
                best, run_start[end] = way, start
        assert best is not None  # one input alone is always allowed
        cheapest[end] = best
    runs = []
    end = len(lengths)
    while end > 0:
        runs.append((run_start[end], end))
        end = run_start[end]
    return runs[::-1]


def _batch(
    rows: npt.NDArray[np.intp], encodings: list[Encoding], lengths: npt.NDArray[np.int64]
) -> TokenBatch:
    return TokenBatch(
        rows=rows, encodings=[encodings[i] for i in rows], length=int(lengths[rows].max())
    )


def pad_batch(
    batch: TokenBatch, pad_id: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """input_ids, attention_mask and token_type_ids, right-padded to the batch length."""
    shape = (len(batch.encodings), batch.length)
    ids = np.full(shape, pad_id, dtype=np.int64)
    mask = np.zeros(shape, dtype=np.int64)
    type_ids = np.zeros(shape, dtype=np.int64)
    for row, enc in enumerate(batch.encodings):
        n = len(enc.ids)
        ids[row, :n] = enc.ids
        mask[row, :n] = 1
        type_ids[row, :n] = enc.type_ids
    return ids, mask, type_ids
