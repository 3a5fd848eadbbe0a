"""The job queue: leases, backoff, lanes, and every way a job leaves the queue (what a message
says is worker/pipeline/messages.py)."""

from __future__ import annotations

import hashlib
import logging
import random
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb, set_json_loads

from worker import db, queries
from worker.backoff import Backoff
from worker.pipeline.messages import Job, clip_error, loads_message
from worker.target import Target

logger = logging.getLogger(__name__)


# --- backoff ----------------------------------------------------------------------------------
def backoff_seconds(
    attempts: int, base: float, cap: float, rng: random.Random | None = None
) -> int:
    """worker/backoff.py's policy with ±20% jitter: base, 2·base, 4·base, ... capped at `cap`,
    in whole seconds (what pgmq.set_vt takes); a sub-second base retries at once."""
    return max(0, round(Backoff(base, cap, spread=(0.8, 1.2)).delay(attempts, rng)))


# --- lanes ------------------------------------------------------------------------------------
LIVE = "live"  # jobs of the triggers: the application's writes
BACKFILL = "backfill"  # watch()'s initial enqueue, model changes, sweep(), failures --retry
# read_jobs' {read_stamp} where pgmq has last_read_at (1.8 and later).
LAST_READ_STAMP = ", last_read_at = pg_catalog.clock_timestamp()"


def backfill_queue_name(queue: str) -> str:
    """The backfill lane of live queue `queue`, as embeddings_internal.backfill_queue() names it."""
    if len(queue) <= 38:
        return queue + "_backfill"
    digest = hashlib.md5(queue.encode()).hexdigest()[:8]  # noqa: S324 - a name, not secrecy
    return f"{queue[:28]}_{digest}_backfill"


def turn_ended(rows: Sequence[Sequence[Any]], after: int | None) -> int | None:
    """The target a batch read by read_jobs_by_target ended its turn with: of its jobs'
    targets, the last in the turn's order (ids after `after` first, then from the lowest).
    None, to start again from the first, after jobs without a target (the last of a turn)."""
    served: set[int] = {
        int(m["target"])
        for *_, m in rows
        if isinstance(m, dict) and type(m.get("target")) is int  # (not a bool)
    }
    if not served:
        return None
    return max(served, key=lambda target: (after is not None and target <= after, target))


# --- operations -------------------------------------------------------------------------------
class Queue:
    """pgmq operations on one queue, each a single statement (callers own transactions).
    `lane` is LIVE or BACKFILL; `home` is the live queue the lane belongs to: dead letters are
    recorded under it, so that `failures --retry` sends them to its backfill lane."""

    def __init__(self, name: str, *, lane: str = LIVE, home: str | None = None) -> None:
        self.name = name
        self.lane = lane
        self.home = home or name
        self.table = queries.queue_table(name)
        self._read_queries: dict[str, Any] = {}
        self._read_stamp: sql.Composable | None = None  # (looked up once: _compose_read)
        # A backfill lane is read in turns between its targets: the target the last batch
        # ended with (read_jobs_by_target starts the next turn after it).
        self._after: int | None = None

    def _q(self, name: str) -> Any:
        return queries.compose(name, queue_table=self.table)

    def read(
        self, conn: db.Connection, *, max_keys: int, vt: int, held_for: Sequence[int] = ()
    ) -> list[tuple[Any, ...]]:
        """Leases visible jobs; with `held_for`, the held jobs of those targets instead
        (read_held_jobs: a worker that can serve them takes what others held)."""
        with db.translated():
            if self.lane == LIVE and not held_for:
                # The triggers' keys wait in the inbox until a reader moves them (sql/22_inbox.sql).
                conn.execute(self._q("move_inbox"), {"queue": self.name})
            by_target = self.lane == BACKFILL and not held_for
            name = (
                "read_held_jobs"
                if held_for
                else "read_jobs_by_target"
                if by_target
                else "read_jobs"
            )
            if name not in self._read_queries:
                self._read_queries[name] = self._compose_read(conn, name)
            cur = conn.cursor()
            set_json_loads(loads_message, cur)  # key numbers as their text (KeyNumber)
            params: dict[str, Any] = {"max_keys": max_keys, "vt": vt}
            if held_for:
                params["target_ids"] = sorted(set(held_for))
            if by_target:
                params["after"] = None if self._after is None else Jsonb(self._after)
            rows = cur.execute(self._read_queries[name], params).fetchall()
        if by_target and rows:
            self._after = turn_ended(rows, self._after)
        return rows

    def _compose_read(self, conn: db.Connection, name: str) -> Any:
        if self._read_stamp is None:
            # pgmq before 1.8 (what Supabase ships) has no last_read_at column.
            row = conn.execute(
                queries.get("queue_has_last_read_at"), {"queue_table": f"pgmq.q_{self.name}"}
            ).fetchone()
            self._read_stamp = sql.SQL(LAST_READ_STAMP if row and row[0] else "")
        return queries.compose(name, queue_table=self.table, read_stamp=self._read_stamp)

    def extend(
        self, conn: db.Connection, leases: Mapping[int, datetime], vt: int
    ) -> dict[int, datetime]:
        if not leases:
            return {}
        with db.translated():
            rows = conn.execute(
                self._q("extend_leases"),
                {"msg_ids": list(leases), "vts": list(leases.values()), "vt": vt},
            ).fetchall()
        return {msg_id: new_vt for msg_id, new_vt in rows}

    def release(self, conn: db.Connection, leases: Mapping[int, datetime]) -> int:
        if not leases:
            return 0
        with db.translated():
            rows = conn.execute(
                self._q("release_leases"), {"msg_ids": list(leases), "vts": list(leases.values())}
            ).fetchall()
        return len(rows)

    def defer(self, conn: db.Connection, targets: Mapping[int, int | None], delay: int) -> None:
        """Puts jobs back for `delay` seconds without counting the attempt, each marked held for
        its target (msg_id -> target id; None: no target to release it for): release_held()
        ends the wait early."""
        if targets:
            with db.translated():
                params = {"msg_ids": list(targets), "target_ids": list(targets.values())}
                conn.execute(self._q("defer_jobs"), {**params, "delay": delay})

    def send_held(
        self, conn: db.Connection, messages: Sequence[tuple[dict[str, Any], int]]
    ) -> None:
        """Sends new jobs (message, delay), each held for the target its message names, as
        defer() marks them: release_held() ends their wait early."""
        groups: dict[tuple[int, int], list[dict[str, Any]]] = {}
        for message, delay in messages:
            groups.setdefault((message["target"], delay), []).append(message)
        # A group at a time: the ids sent are those of one target and one delay, whatever the
        # order in which send_jobs returns them.
        for (target_id, delay), group in groups.items():
            with db.translated():
                rows = conn.execute(
                    self._q("send_jobs"),
                    {
                        "queue": self.name,
                        "messages": [Jsonb(m) for m in group],
                        "delays": [delay] * len(group),
                    },
                ).fetchall()
            self.defer(conn, {int(row[0]): target_id for row in rows}, delay)

    def release_held(self, conn: db.Connection, target_ids: Iterable[int]) -> int:
        """Makes the held jobs of these targets visible now; returns how many."""
        ids = sorted(set(target_ids))
        if not ids:
            return 0
        with db.translated():
            rows = conn.execute(self._q("release_held_jobs"), {"target_ids": ids}).fetchall()
        return len(rows)

    def held_counts(self, conn: db.Connection, target_ids: Iterable[int]) -> dict[int, int]:
        """How many jobs each of these targets has held (none: absent)."""
        ids = sorted(set(target_ids))
        if not ids:
            return {}
        with db.translated():
            rows = conn.execute(self._q("held_job_counts"), {"target_ids": ids}).fetchall()
        return {int(target): int(count) for target, count in rows}

    def retry(
        self, conn: db.Connection, delays: Mapping[int, int], errors: Mapping[int, str]
    ) -> None:
        """Backs jobs off, each by its delay, each carrying its last error (for `status`)."""
        if delays:
            with db.translated():
                conn.execute(
                    self._q("retry_jobs"),
                    {
                        "msg_ids": list(delays),
                        "delays": list(delays.values()),
                        "errors": [clip_error(errors.get(m, "failed")) for m in delays],
                    },
                )

    def delete(self, conn: db.Connection, msg_ids: Sequence[int]) -> None:
        if msg_ids:
            with db.translated():
                conn.execute(self._q("delete_jobs"), {"queue": self.name, "msg_ids": list(msg_ids)})

    def archive(self, conn: db.Connection, msg_ids: Sequence[int]) -> None:
        if msg_ids:
            with db.translated():
                conn.execute(
                    self._q("archive_jobs"), {"queue": self.name, "msg_ids": list(msg_ids)}
                )

    def send(self, conn: db.Connection, messages: Sequence[tuple[dict[str, Any], int]]) -> None:
        if messages:
            with db.translated():
                conn.execute(
                    self._q("send_jobs"),
                    {
                        "queue": self.name,
                        "messages": [Jsonb(m) for m, _ in messages],
                        "delays": [d for _, d in messages],
                    },
                )

    def depth(self, conn: db.Connection) -> tuple[int, int, float]:
        """(jobs, visible jobs, age of the oldest in seconds)."""
        with db.translated():
            row = conn.execute(self._q("queue_depth"), {"queue": self.name}).fetchone()
        assert row is not None
        return int(row[0]), int(row[1]), float(row[2])


@dataclass
class DeadLetter:
    target: Target | None
    target_label: str
    row_key: Any
    message: dict[str, Any] | Any
    attempts: int
    error: str


def record_failures(conn: db.Connection, queue: str, letters: Sequence[DeadLetter]) -> None:
    if not letters:
        return
    with db.translated():
        conn.execute(
            queries.compose("record_failures"),
            {
                "target_ids": [d.target.id if d.target else None for d in letters],
                "targets": [d.target_label for d in letters],
                "row_keys": [None if d.row_key is None else Jsonb(d.row_key) for d in letters],
                "queues": [queue] * len(letters),
                "messages": [Jsonb(d.message) for d in letters],
                "attempts": [d.attempts for d in letters],
                "errors": [d.error for d in letters],
            },
        )


class Leases:
    """Jobs this process holds, with the vt it set: only those are renewed or handed back."""

    def __init__(self) -> None:
        self._held: dict[int, datetime] = {}
        self._lock = threading.Lock()

    def add(self, jobs: Iterable[Job]) -> None:
        with self._lock:
            for job in jobs:
                self._held[job.msg_id] = job.vt

    def drop(self, msg_ids: Iterable[int]) -> None:
        with self._lock:
            for msg_id in msg_ids:
                self._held.pop(msg_id, None)

    def renewed(self, vts: Mapping[int, datetime]) -> None:
        with self._lock:
            for msg_id, vt in vts.items():
                if msg_id in self._held:
                    self._held[msg_id] = vt

    def held(self, msg_ids: Iterable[int] | None = None) -> dict[int, datetime]:
        with self._lock:
            if msg_ids is None:
                return dict(self._held)
            return {m: self._held[m] for m in msg_ids if m in self._held}

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)
