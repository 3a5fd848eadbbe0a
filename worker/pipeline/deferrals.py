"""What a batch's outcome tells `status` and `failures`, written in the batch's transaction.

- A target whose jobs were deferred (model missing, dimensions that do not fit...) gets its
  reason recorded in `embeddings.deferrals`; `embeddings.status` shows it while jobs wait. So
  does a target in a model change whose own rows went back held while its application's were
  written (the new model cannot serve them: Batch.change_held). A
  target the batch wrote for again loses its deferral, but for a target in a model change
  whose new model the batch did not use: its application's rows are embedded by the old model
  while the new one cannot load (worker/pipeline/shadow.py), and the change's jobs are still
  held.
- A row written or cleared resolves its dead letters: a row dead-lettered once and embedded
  later (its content changed, or someone re-queued it by hand) no longer counts as failed, so
  `failures` and `status` agree.

Called by `write.write` inside its transaction with the states the transaction gave the rows
(the rows themselves change only after COMMIT): a rollback takes these notes back with
everything else. Each note runs in a savepoint and a
failure is only logged: these notes never cost the batch its write.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb

from worker import db, queries

if TYPE_CHECKING:
    from worker.pipeline.batch import Batch, Row, RowState

logger = logging.getLogger(__name__)

# RowState values whose dead letters are resolved: a row embedded, cleared, or gone (deleted:
# its letter named a row there is no more, and was counted in status's failed_jobs for ever).
SETTLED = ("written", "cleared", "gone")


def record(conn: db.Connection, batch: Batch, state_of: Callable[[Row], RowState]) -> None:
    served: dict[int, list[str]] = defaultdict(list)
    whole: set[int] = set()  # targets served as a whole: their deferrals go
    for row in batch.rows.values():
        if row.target.id not in batch.deferred and state_of(row).value in SETTLED:
            served[row.target.id].append(row.key)
            if not row.target.in_change or batch.producers.get(row.target.id, (None, None))[1]:
                whole.add(row.target.id)
    if served:
        # A dead letter holds the key as its job carried it: matched by that JSON value, or by
        # its text where the two forms agree (one-column keys from the guide's messages).
        raw = {
            (job.target.id, key): job.raw_keys[key]
            for job in batch.jobs
            if job.target is not None
            for key in job.keys
        }
        pairs = [(t, k) for t, keys in served.items() for k in keys]
        _note(
            conn,
            "resolve_failures",
            {
                "target_ids": [t for t, _ in pairs],
                "keys": [k for _, k in pairs],
                "raw_keys": [Jsonb(raw.get(pair)) for pair in pairs],
            },
        )
        if whole:
            _note(conn, "clear_deferrals", {"target_ids": sorted(whole)})
    # (a change's rows held only if they went back held: not when the write handed the target
    # back, redefined, or deferred it whole)
    held = {
        row.target.id
        for row in batch.rows.values()
        if row.shadow_only and state_of(row).value == "postponed"
    }
    reasons = {t: why for t, why in batch.change_held.items() if t in held}
    reasons.update(batch.deferred)
    if reasons:
        jobs: dict[int, int] = defaultdict(int)
        for job in batch.jobs:
            if job.target is not None and (
                job.target.id in batch.deferred or (job.shadow and job.target.id in reasons)
            ):
                jobs[job.target.id] += 1
        ids = list(reasons)
        _note(
            conn,
            "note_deferrals",
            {
                "target_ids": ids,
                "reasons": [reasons[i] for i in ids],
                "jobs": [jobs[i] for i in ids],
            },
        )


def _note(conn: db.Connection, query: str, params: dict[str, Any]) -> None:
    # A failure here leaves the batch's write intact.
    with db.best_effort(conn, f"{query} failed (status may lag)", logger):
        conn.execute(queries.compose(query), params)
