"""A batch of jobs and its rows, as they go through the pipeline's stages.

A Row is one (target, key) of the batch; its state says what the stages found or did. The write
stage never changes a row's state before its transaction has committed (worker.pipeline.write).
"""

from __future__ import annotations

import enum
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from worker.pipeline import jobs as jobqueue
from worker.pipeline import messages
from worker.pipeline.pieces import Limits
from worker.target import Target

if TYPE_CHECKING:
    from worker.pipeline.pieces import DocumentChunks


class RowState(enum.Enum):
    PENDING = "pending"  # not loaded yet
    READY = "ready"  # content loaded, to embed
    BLANK = "blank"  # NULL, empty or whitespace-only content: the embedding is cleared
    GONE = "gone"  # no such row (deleted): acknowledged
    EMBEDDED = "embedded"  # vector computed, to write
    FAILED = "failed"  # this row's own error: retried, then dead-lettered
    WRITTEN = "written"
    CLEARED = "cleared"
    STALE = "stale"  # content changed since loading: its newer job embeds it
    OUTDATED = "outdated"  # the target was redefined (watch()) since the batch was read: redone
    # Chunked targets: past the batch's chunk budget; remote models: not embedded because their
    # provider could not (worker/pipeline/remote.py). Re-queued with no attempt counted.
    POSTPONED = "postponed"
    # Chunked targets: a piece of a long document written (worker/pipeline/pieces.py); the
    # rest is re-queued as a postponed row is.
    PIECE = "piece"
    # Held up by another session's lock (on the row, its table, its registration) past
    # EMBED_LOCK_TIMEOUT_MS, or not tried after a neighbour's owner code ran past its bound:
    # re-queued after a short, growing delay, with no attempt counted (worker/pipeline/bounds.py).
    BLOCKED = "blocked"
    # Chunked targets: a long document's next piece whose chain of pieces another job's took
    # over (worker/pipeline/chunks/reading.py): acknowledged, nothing written.
    SUPERSEDED = "superseded"


@dataclass(frozen=True)
class Fate:
    """What became of a failed row's job (worker.pipeline.write.settle): its attempt `attempt`
    of `of`, and either another attempt in `retry_in` seconds or, with None, the last one:
    the row is in embeddings.failures."""

    attempt: int
    of: int
    retry_in: int | None


# A target that cannot be served (model missing, dimension mismatch) has its jobs put back
# this long, without counting an attempt (held: a worker that can serve the target takes them
# at once, worker/process/held.py); a remote model's wait as long as their provider said.
DEFER_SECONDS = 60


@dataclass
class Row:
    target: Target
    key: str
    state: RowState = RowState.PENDING
    content: str | None = None
    digest: str | None = None
    vector: np.ndarray[Any, np.dtype[np.float32]] | None = None
    error: str | None = None
    # model change: the new model's vector; shadow_only when every job of the row asked only
    # for it (the row's current vector stays as it is)
    shadow_vector: np.ndarray[Any, np.dtype[np.float32]] | None = None
    shadow_only: bool = False
    chunks: DocumentChunks | None = None  # chunked targets: set by chunks.prepare
    fate: Fate | None = None  # a failed row, once its batch committed: retried or dead-lettered
    # A postponed row of a remote model: when its provider is worth asking again (seconds).
    retry_after: float | None = None
    permanent: bool = False  # failed for good (a document over its ceiling): no retries
    # Its owner code ran past its bound (worker/pipeline/bounds.py): nothing more of that code
    # runs for it in this batch (its vector is not cleared either).
    ran_over: bool = False

    def fail(self, error: str, *, permanent: bool = False) -> None:
        self.state = RowState.FAILED
        self.error = error
        self.permanent = permanent


@dataclass
class TargetStats:
    jobs: int = 0
    rows: int = 0
    tokens: int = 0
    embed_ms: float = 0.0


@dataclass
class Batch:
    jobs: list[messages.Job]
    rows: dict[tuple[int, str], Row] = field(default_factory=dict)
    deferred: dict[int, str] = field(default_factory=dict)  # target id -> why
    stats: dict[int, TargetStats] = field(default_factory=lambda: defaultdict(TargetStats))
    load_ms: float = 0.0
    write_ms: float = 0.0
    # When it was read (time.monotonic()): its rows were embedded since then, which the recent
    # rate in status counts from (record_throughput's `since`).
    read_at: float = field(default_factory=time.monotonic)
    lane: str = jobqueue.LIVE  # the lane it was read from (worker/pipeline/lanes.py)
    # provenance: target id -> (producer of its vectors, of its shadow vectors), each
    # 'model revision variant' as embeddings.provenance records it (worker/pipeline/provenance.py)
    producers: dict[int, tuple[str | None, str | None]] = field(default_factory=dict)
    # deferred targets whose jobs come back after their own delay (a remote model's provider
    # said when: Retry-After, its circuit breaker), not after DEFER_SECONDS
    defer_seconds: dict[int, float] = field(default_factory=dict)
    # targets in a model change whose own rows (only the new vector missing) this batch holds
    # for the new model, which cannot serve them, while their application's rows are written:
    # target id -> why (worker/pipeline/shadow.py). Those rows go back held, the reason noted.
    change_held: dict[int, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)  # of long documents (chunked targets)
    # Statements of a table owner's code that ran past their bound and caught its cancel, so
    # that the watchdog ended the session (worker/process/watchdog.py), by stage ("load",
    # "write") and target: None when it was the statement of the target's rows together (they
    # go one at a time when the stage runs again), else the key of the row whose statement it
    # was alone (it fails; the target's rows after it wait for a later batch).
    ignored_bound: dict[tuple[str, int], str | None] = field(default_factory=dict)
    _ended: set[tuple[str, int, str | None]] = field(default_factory=set)

    def ignored(self, label: object) -> bool:
        """Records the label of a bounded statement whose session the watchdog ended (stage,
        target id, key or None); False when it is none, or one recorded before (the stage
        would only run into the same statement again)."""
        if not (isinstance(label, tuple) and len(label) == 3) or label in self._ended:
            return False
        stage, target_id, key = label
        self._ended.add(label)
        self.ignored_bound[(stage, target_id)] = key
        return True

    def by_target(self, state: RowState | None = None) -> dict[Target, list[Row]]:
        groups: dict[Target, list[Row]] = defaultdict(list)
        for row in self.rows.values():
            if row.target.id in self.deferred:
                continue
            if state is None or row.state is state:
                groups[row.target].append(row)
        return groups

    @property
    def has_piece(self) -> bool:
        """It embeds a piece of a long document (worker/pipeline/pieces.py): a batch that takes
        about a piece's time, not a few rows'."""
        return any(row.chunks is not None and not row.chunks.whole for row in self.rows.values())

    @property
    def target_ids(self) -> set[int]:
        return {row.target.id for row in self.rows.values()}

    @property
    def msg_ids(self) -> list[int]:
        return [job.msg_id for job in self.jobs]
