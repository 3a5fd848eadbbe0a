"""Remote models in the embed stage: what each row becomes when its provider answers in part.

A remote model embeds a batch's rows in several requests (worker/models/remote/client.py), and
any of them may fail on its own. The rows then go where the failure says, never to a write of
something the provider did not answer:
- a vector: EMBEDDED, written with the rest of the batch;
- an input the provider refused (400, 413, 422) or answered NaN for: FAILED, the row's attempt
  spent, as with a text the local model fails on;
- a request that could not be served (429 past its wait, 5xx or timeouts past their retries,
  the circuit breaker open): POSTPONED, re-queued without counting an attempt, visible after
  the provider's own retry_after;
- nothing embedded at all for the provider's reason: the whole target is deferred
  (ProviderError raised to stages.embed, which records the reason for `status`).
"""

from __future__ import annotations

from collections.abc import Sequence

from worker.models.remote.client import RemoteModel
from worker.pipeline.batch import Row, RowState


def embed_rows(model: RemoteModel, rows: Sequence[Row], attribute: str = "vector") -> int:
    """Embeds `rows` into their `attribute` (vector, or shadow_vector during a model change);
    returns the tokens. Raises the provider's error when no row could be embedded for it."""
    if not rows:
        return 0
    assert all(row.content is not None for row in rows)
    result = model.embed_partial([row.content or "" for row in rows])
    if result.waiting and len(result.waiting) == len(rows):
        raise next(iter(result.waiting.values()))
    for i, row in enumerate(rows):
        vector = result.vectors[i]
        if vector is not None:
            setattr(row, attribute, vector)
            row.state = RowState.EMBEDDED
        elif i in result.errors:
            row.fail(f"embedding failed: {result.errors[i]}")
        else:
            waiting = result.waiting[i]
            row.state = RowState.POSTPONED
            row.error = str(waiting)
            row.retry_after = waiting.retry_after
    return result.tokens
