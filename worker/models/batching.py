"""Inputs cut into inference calls: sorted by token count, batched by a token budget (rows times
padded length), an attention budget and a cap on padding, then padded to each batch's longest
input. The embedder (worker/models/embedder.py) runs each batch; results go back in the caller's
order through `TokenBatch.rows`."""

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
    """Shortest first; a batch closes when one more input would break a limit.

    The limits: rows x padded length at most `token_budget`; rows x length² (the attention
    score cells per head, which dominate memory for long inputs) at most `attention_budget`;
    and padding at most `max_padding` of the batch's real tokens (without it, a long tail of
    short texts would be padded to the longest that still fits the budget), except in a call
    of at most `padding_allowance` padded tokens. An input longer than the budgets gets a
    batch of its own.
    """
    lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
    order = np.argsort(lengths, kind="stable")
    start = real = 0
    for end in range(len(order)):
        length = int(lengths[order[end]])  # sorted: each new input is the batch's longest
        rows = end - start + 1
        padded = rows * length
        if rows > 1 and (
            padded > token_budget
            or padded * length > attention_budget
            or (padded > padding_allowance and padded > (1 + max_padding) * (real + length))
        ):
            yield _batch(order[start:end], encodings, lengths)
            start, real = end, 0
        real += length
    if start < len(order):
        yield _batch(order[start:], encodings, lengths)


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
