"""The job queue: pgmq messages in, leases, and every way a job leaves the queue.

A job is one pgmq message. Ours carry many row keys of one target, by column as the triggers
send them (`{"target": 3, "columns": ["{1,2}", ["a","b"]]}`: an integer column as its Postgres
array text, any other as a JSON array) or key by key (`{"target": 3, "keys": [...],
"attempts": n}`: backfills, retries, and jobs queued before the column shape; sql/20_queue.sql);
messages in the Supabase guide's shape (`{"id", "schema", "table", "contentFunction",
"embeddingColumn"}`) carry one. Attempts are pgmq's read count plus what a re-sent message
carries over from the message it split from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb, set_json_loads

from worker import db, queries
from worker.pipeline.targets import Target

logger = logging.getLogger(__name__)


@dataclass
class Job:
    msg_id: int
    read_ct: int
    enqueued_at: datetime
    vt: datetime
    message: Any
    prior_attempts: int = 0
    target: Target | None = None
    keys: list[str] = field(default_factory=list)  # canonical text of each valid key
    raw_keys: dict[str, Any] = field(default_factory=dict)  # canonical -> as in the message
    bad_keys: list[tuple[Any, str]] = field(default_factory=list)  # (raw key, why invalid)
    error: str | None = None  # the job as a whole cannot be served (unknown target, ...)
    supabase_shape: bool = False
    shadow: bool = False  # a model change's job: only the new model's vector is missing

    @property
    def attempts(self) -> int:
        return self.prior_attempts + self.read_ct

    def single_key_message(self, canonical: str) -> dict[str, Any]:
        """A job for one of this job's rows, as dead letters keep it for re-sending."""
        if self.supabase_shape:
            return dict(self.message)
        assert self.target is not None
        message: dict[str, Any] = {"target": self.target.id, "keys": [self.raw_keys[canonical]]}
        if self.shadow:
            message["shadow"] = True
        return message


# --- parsing ----------------------------------------------------------------------------------
class KeyNumber(str):
    """A JSON number with a fraction or exponent, as the text Postgres wrote: a numeric key has
    more digits than a float holds (and a float key's shortest text is its own), so key numbers
    are never parsed as floats."""


def loads_message(data: str | bytes) -> Any:
    """A job message's JSON, numbers with a fraction or exponent kept as KeyNumber text."""
    return json.loads(data, parse_float=KeyNumber)


def register_hint(schema: str, table: str, content: str, column: str) -> str:
    return (
        f"register it with: SELECT embeddings.watch('{schema}.{table}', '{content}', "
        f"embedding_column => '{column}', triggers => false);"
    )


def parse(row: Sequence[Any], targets: Mapping[int, Target]) -> Job:
    msg_id, read_ct, enqueued_at, vt, message = row
    job = Job(msg_id=msg_id, read_ct=read_ct, enqueued_at=enqueued_at, vt=vt, message=message)
    if not isinstance(message, dict):
        job.error = f"unrecognised job message (not a JSON object): {_clip(message)}"
        return job
    if "target" in message:
        _parse_ours(job, message, targets)
    elif {"id", "schema", "table"} <= message.keys():
        _parse_supabase(job, message, targets)
    else:
        job.error = f"unrecognised job message: {_clip(message)}"
    return job


def _parse_ours(job: Job, message: dict[str, Any], targets: Mapping[int, Target]) -> None:
    target_id, attempts = message.get("target"), message.get("attempts", 0)
    try:
        keys = message_keys(message)
    except ValueError:
        keys = None
    if not isinstance(target_id, int) or isinstance(target_id, bool) or keys is None:
        job.error = f"malformed job message: {_clip(message)}"
        return
    job.prior_attempts = attempts if isinstance(attempts, int) and attempts > 0 else 0
    job.shadow = message.get("shadow") is True
    target = targets.get(target_id)
    if target is None:
        job.error = (
            f"target {target_id} is not registered (was the table unwatched?); "
            "register the table again with embeddings.watch()"
        )
        return
    job.target = target
    _add_keys(job, target, keys)


def message_keys(message: Mapping[str, Any]) -> list[Any]:
    """The row keys of one of our messages, each as the "keys" shape carries it (a JSON scalar,
    or a list for a composite key: an integer column's values as ints), or ValueError."""
    keys = message.get("keys")
    if "columns" not in message:
        if not isinstance(keys, list):
            raise ValueError("no key list")
        return keys
    columns = message["columns"]
    if not isinstance(columns, list) or not columns:
        raise ValueError("no key columns")
    values = [_column_values(c) for c in columns]
    if any(len(v) != len(values[0]) for v in values):
        raise ValueError("key columns of different lengths")
    if len(values) == 1:
        return values[0]
    return [list(key) for key in zip(*values, strict=True)]


def _column_values(column: Any) -> list[Any]:
    """One key column's values: a JSON array as is, an integer array's text ('{1,-2}') as ints."""
    if isinstance(column, list):
        return column
    if not isinstance(column, str) or not (column.startswith("{") and column.endswith("}")):
        raise ValueError(f"invalid key column {column!r}")
    inner = column[1:-1]
    if not inner:
        return []
    try:
        return [int(v) for v in inner.split(",")]
    except ValueError:
        raise ValueError(f"invalid integer key column {column!r}") from None


def _parse_supabase(job: Job, message: dict[str, Any], targets: Mapping[int, Target]) -> None:
    job.supabase_shape = True
    schema, table = message.get("schema"), message.get("table")
    column = message.get("embeddingColumn") or "embedding"
    function = message.get("contentFunction")
    if not all(isinstance(v, str) for v in (schema, table, column)) or not (
        function is None or isinstance(function, str)
    ):
        job.error = f"malformed job message: {_clip(message)}"
        return
    assert isinstance(schema, str) and isinstance(table, str) and isinstance(column, str)
    target = next((t for t in targets.values() if t.matches_supabase(schema, table, column)), None)
    if target is None:
        job.error = f"{schema}.{table}.{column} is not watched; " + register_hint(
            schema, table, function or "<content column or function>", column
        )
        return
    if function is not None and not _same_function(target, function):
        registered = (
            ".".join(target.content_function)
            if target.content_function
            else f"column {target.content_column}"
        )
        job.error = (
            f"{target.name} is registered with content {registered}, but the job names "
            f"function {function!r}; re-register with: SELECT embeddings.watch("
            f"'{schema}.{table}', '{function}', embedding_column => '{column}', triggers => false);"
        )
        return
    job.target = target
    _add_keys(job, target, [message["id"]])


def _same_function(target: Target, name: str) -> bool:
    if target.content_function is None:
        return False
    schema, proname = target.content_function
    return name in (proname, f"{schema}.{proname}")


def _add_keys(job: Job, target: Target, keys: Iterable[Any]) -> None:
    for raw in keys:
        try:
            canonical = target.canonical_key(raw)
        except ValueError as exc:
            job.bad_keys.append((raw, str(exc)))
            continue
        if canonical not in job.raw_keys:
            job.raw_keys[canonical] = raw
            job.keys.append(canonical)


def _clip(value: Any, limit: int = 200) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def clip_error(error: str, limit: int = 500) -> str:
    """An error as a retried message carries it: enough to say what failed, never a document."""
    return error if len(error) <= limit else error[:limit] + "..."


# --- backoff ----------------------------------------------------------------------------------
def backoff_seconds(
    attempts: int, base: float, cap: float, rng: random.Random | None = None
) -> int:
    """Exponential backoff with ±20% jitter: base, 2·base, 4·base, ... capped at `cap`, in whole
    seconds (what pgmq.set_vt takes); a sub-second base retries at once."""
    rng = rng or random.Random()  # noqa: S311 - jitter, not secrecy
    delay = min(cap, base * 2 ** max(attempts - 1, 0))
    jittered: float = delay * rng.uniform(0.8, 1.2)
    return max(0, round(jittered))


# --- lanes ------------------------------------------------------------------------------------
LIVE = "live"  # jobs of the triggers: the application's writes
BACKFILL = "backfill"  # watch()'s initial enqueue, model changes, sweep(), failures --retry


def backfill_queue_name(queue: str) -> str:
    """The backfill lane of live queue `queue`, as embeddings.backfill_queue() names it."""
    if len(queue) <= 38:
        return queue + "_backfill"
    digest = hashlib.md5(queue.encode()).hexdigest()[:8]  # noqa: S324 - a name, not secrecy
    return f"{queue[:28]}_{digest}_backfill"


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
        self._read_query: Any = None

    def _q(self, name: str) -> Any:
        return queries.compose(name, queue_table=self.table)

    def read(self, conn: db.Connection, *, max_keys: int, vt: int) -> list[tuple[Any, ...]]:
        with db.translated():
            if self.lane == LIVE:
                # The triggers' keys wait in the inbox until a reader moves them (sql/22_inbox.sql).
                conn.execute(self._q("move_inbox"), {"queue": self.name})
            if self._read_query is None:
                self._read_query = self._compose_read(conn)
            cur = conn.cursor()
            set_json_loads(loads_message, cur)  # key numbers as their text (KeyNumber)
            return cur.execute(self._read_query, {"max_keys": max_keys, "vt": vt}).fetchall()

    def _compose_read(self, conn: db.Connection) -> Any:
        # pgmq before 1.8 (what Supabase ships) has no last_read_at column.
        row = conn.execute(
            queries.get("queue_has_last_read_at"), {"queue_table": f"pgmq.q_{self.name}"}
        ).fetchone()
        stamp = sql.SQL(", last_read_at = clock_timestamp()" if row and row[0] else "")
        return queries.compose("read_jobs", queue_table=self.table, read_stamp=stamp)

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

    def release_held(self, conn: db.Connection, target_ids: Iterable[int]) -> int:
        """Makes the held jobs of these targets visible now; returns how many."""
        ids = sorted(set(target_ids))
        if not ids:
            return 0
        with db.translated():
            rows = conn.execute(self._q("release_held_jobs"), {"target_ids": ids}).fetchall()
        return len(rows)

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
