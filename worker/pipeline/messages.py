"""Job messages: what one pgmq message asks for, parsed into a Job.

A job is one pgmq message. Ours carry many row keys of one target, by column as the triggers
send them (`{"target": 3, "columns": ["{1,2}", ["a","b"]]}`: an integer column as its Postgres
array text, any other as a JSON array) or key by key (`{"target": 3, "keys": [...],
"attempts": n}`: backfills, retries, and jobs queued before the column shape; sql/20_queue.sql);
messages in the Supabase guide's shape (`{"id", "schema", "table", "contentFunction",
"embeddingColumn"}`) carry one. Attempts are pgmq's read count plus what a re-sent message
carries over from the message it split from. A job held for its target (worker/process/held.py)
also carries `held`; one re-sent because a lock held its rows up, how often that happened
(`blocked`: worker/pipeline/bounds.py); a long document's next piece, `continued` and the
progress its chain recorded (`chunks_done`: worker/pipeline/pieces.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import sql

from worker import escapes
from worker.target import Target

# A name that SQL reads as itself unquoted, in a regclass's text (no keyword is special there).
_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_]*")
# One part of a dotted SQL name: quoted, or unquoted (ASCII letters folded to lower case).
_NAME_PART = re.compile(r'"((?:[^"]|"")+)"|([A-Za-z_\x80-\U0010ffff][A-Za-z0-9_$\x80-\U0010ffff]*)')
_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


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
    blocked: int = 0  # times its rows were held up by a lock before (worker/pipeline/bounds.py)
    # A long document's next piece (worker/pipeline/pieces.py): where its chain left the
    # document's recorded progress (None: a job of 0.3.0's, or not a continuation).
    chunks_done: int | None = None
    # Queued before its target's key was retyped (`key_retyped`, sql/45_dropped.sql:
    # follow_key_retype): a key not of the key's new type names no row now. Such keys are
    # acknowledged, not dead-lettered: the retype's backfill queues their rows under new keys.
    key_retyped: bool = False
    retyped_keys: list[tuple[Any, str]] = field(default_factory=list)  # (raw key, why invalid)

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


class KeyNumber(str):
    """A JSON number with a fraction or exponent, as the text Postgres wrote: a numeric key has
    more digits than a float holds (and a float key's shortest text is its own), so key numbers
    are never parsed as floats."""


def loads_message(data: str | bytes) -> Any:
    """A job message's JSON, numbers with a fraction or exponent kept as KeyNumber text."""
    return json.loads(data, parse_float=KeyNumber)


def qualified_name(*parts: str) -> str:
    """Names a Supabase-shaped message carries, dotted, each quoted where SQL would need it
    (`public."My Docs"`): one name per table, as a target's name is (Target.name)."""
    return ".".join(
        part if _PLAIN_NAME.fullmatch(part) else sql.Identifier(part).as_string(None)
        for part in parts
    )


def watch_statement(schema: str, table: str, content: str, column: str) -> str:
    """The watch() call that registers a table a Supabase-shaped message names, for an operator
    to run: the names are a producer's (a tenant's table), so each is quoted as SQL must
    (`'public."My''Docs"'`) rather than pasted into the statement as they are."""
    shown = escapes.shown_literal
    return (
        f"SELECT embeddings.watch({shown(qualified_name(schema, table))}, {shown(content)}, "
        f"embedding_column => {shown(column)}, triggers => false);"
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
    job.key_retyped = message.get("key_retyped") is True
    blocked = message.get("blocked", 0)
    job.blocked = blocked if isinstance(blocked, int) and blocked > 0 else 0
    done = message.get("chunks_done")
    if message.get("continued") is True and isinstance(done, int) and not isinstance(done, bool):
        job.chunks_done = done if done >= 0 else None
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
        statement = watch_statement(
            schema, table, function or "<content column or function>", column
        )
        named = qualified_name(schema, table, column)
        job.error = f"{named} is not watched; register it with: {statement}"
        return
    if function is not None and not _same_function(target, function):
        registered = (
            f"function {qualified_name(*target.content_function)}"
            if target.content_function
            else f"column {qualified_name(target.content_column or '')}"
        )
        job.error = (
            f"{target.name} is registered with content {registered}, but the job names "
            f"function {function!r}; re-register with: "
            + watch_statement(schema, table, function, column)
        )
        return
    job.target = target
    _add_keys(job, target, [message["id"]])


def _same_function(target: Target, name: str) -> bool:
    """Whether a message's contentFunction `name` is the target's: as the guide's Edge Function
    names it (dotted parts as they are, `public.embedding_input`), or as SQL reads a name
    (`"My Schema"."Content Fn"`, unquoted parts in lower case)."""
    if target.content_function is None:
        return False
    schema, proname = target.content_function
    return name in (proname, f"{schema}.{proname}") or sql_name_parts(name) in (
        (proname,),
        (schema, proname),
    )


def sql_name_parts(name: str) -> tuple[str, ...] | None:
    """The parts of a dotted SQL name as Postgres' parse_ident() reads them (`"A b".C` is
    ("A b", "c"): a quoted part as it is, `""` a quote in it; an unquoted one with its ASCII
    letters in lower case, as a UTF8 database folds it), or None for text that is no name."""
    parts: list[str] = []
    at = 0
    while True:
        found = _NAME_PART.match(name, at)
        if found is None:
            return None
        quoted, plain = found.group(1), found.group(2)
        parts.append(quoted.replace('""', '"') if quoted is not None else plain.translate(_FOLD))
        at = found.end()
        if at == len(name):
            return tuple(parts)
        if name[at] != ".":
            return None
        at += 1


def _add_keys(job: Job, target: Target, keys: Iterable[Any]) -> None:
    for raw in keys:
        try:
            canonical = target.canonical_key(raw)
        except ValueError as exc:
            (job.retyped_keys if job.key_retyped else job.bad_keys).append((raw, str(exc)))
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
