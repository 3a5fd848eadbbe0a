"""The status read model: one row per watched target, by name, as `embed-worker status`, its
`--json`, `status --watch` and `doctor` read it.

From `embeddings.status` (row counts estimated for large tables: its `estimated` column) or,
exact, `embeddings.status_exact`; with what the view does not hold added from our other tables
and the queues: rows waiting for a retry, the verifying sweep's progress, long documents in
progress, and the ETA (the pending rows at the recent rate, a document in pieces at its own).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from worker import db, exceptions, queries

COLUMNS = (
    "target",
    "target_id",
    "total_rows",
    "embedded_rows",
    "pending_jobs",
    "failed_jobs",
    "oldest_pending_seconds",
    "rows_per_second",
    "model",
    "cleared_rows",
    "deferred_reason",
    "deferred_since",
    "problem",  # what stops the target's progress, in words (NULL when nothing does)
    "chunks",  # chunked targets only (NULL otherwise): embedded rows are documents with chunks
    "estimated",  # total, embedded and cleared rows and chunks are estimates (large tables)
    "backfill_rows",  # rows a running backfill has still to queue (NULL: none runs)
    "index_deferred",  # the HNSW index waits for the backfill's end
    "pending_live",  # priority lanes: the application's writes
    "pending_backfill",  # watch()'s initial enqueue, model changes, sweep(), failures --retry
    "vectors_from",  # provenance: 'model revision variant' of the stored vectors
    "change_model",  # a model change in progress (NULL otherwise) and its progress
    "change_done_rows",
    "change_total_rows",
    "change_rows_per_second",
    "change_eta_seconds",
    "stopped",  # what stops it: [{state, reason, fix, since}] (sql/52_stopped.sql); NULL: nothing
    # jobs the worker holds, put back without an attempt (deferred_reason says why); rows that
    # failed and wait for their retry are `retrying_rows` instead
    "held_jobs",
    "swap_waiting_since",  # a model change's swap waiting for its table lock, from the first
    "swap_attempts",  # attempt (the stopped state swap_waiting comes after swap_wait_alarm)
    "swap_holders",
)
VIEWS = {False: "status", True: "status_exact"}


def fetch(
    conn: db.Connection, *, exact: bool = False, targets: list[int] | None = None
) -> list[dict[str, Any]]:
    """The status of every target, or of those with the ids `targets` (the others are not
    counted: an exact status of one table scans that table alone)."""
    with db.translated(), conn.transaction():
        if targets is not None:
            only = "{" + ",".join(str(int(t)) for t in targets) + "}"
            conn.execute(queries.compose("status_only"), {"targets": only})
        cur = conn.cursor(row_factory=dict_row).execute(
            queries.compose(
                "status_rows",
                columns=sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
                view=sql.Identifier("embeddings", VIEWS[exact]),
            ),
            {"targets": targets},
        )
        rows: list[dict[str, Any]] = cur.fetchall()
        if targets is not None:  # (inside a caller's transaction, it would last as long)
            conn.execute(queries.compose("status_only"), {"targets": ""})
    _add_retrying(conn, rows)
    _add_verification(conn, rows)
    _add_documents(conn, rows)
    _add_locked(conn, rows)
    _add_unqueued(conn, rows)
    for row in rows:
        row["eta_seconds"] = eta_seconds(row)
    return rows


# An estimate leaves out gaps under this share of the table's rows: the statistics system's
# count of changed rows may lag the last batch's commit by a second or so.
UNQUEUED_ESTIMATE_MARGIN = 0.01


def unqueued_rows(row: dict[str, Any], changed_since_analyze: int | None = None) -> int | None:
    """At least how many rows have content but no vector, and no job to give them one (their
    writes were not queued: a logical-replication subscriber watched without `replica =>
    true`, triggers disabled); `embeddings.sweep()` queues them. Rows that should have a
    vector, less those with one, less every pending job and dead letter (each of which might
    be one of them): a lower bound, from the counts status already has. None where it cannot
    be told: a content function's blank rows are not counted; an estimate (large tables) only
    where the vectors live in the table, no job is pending, and the gap is more than the rows
    changed since the statistics were taken (`changed_since_analyze`, None: not known) could
    explain (the embedded estimate moves only when the table is analyzed)."""
    total, embedded, cleared = row["total_rows"], row["embedded_rows"], row["cleared_rows"]
    if total is None or embedded is None or cleared is None:
        return None
    if row.get("chunks") is not None and row.get("documents_no_text") is None:
        return None  # a chunked target's documents with no text, not read (no grant)
    wanted = total - cleared - (row.get("documents_no_text") or 0)
    wanted -= row.get("documents_over_ceiling") or 0
    gap = wanted - embedded - row["pending_jobs"] - row["failed_jobs"]
    if row["estimated"]:
        if changed_since_analyze is None or row["pending_jobs"]:
            return None
        gap -= changed_since_analyze
        if gap <= total * UNQUEUED_ESTIMATE_MARGIN:
            return 0
    return max(int(gap), 0)


def _add_unqueued(conn: db.Connection, rows: list[dict[str, Any]]) -> None:
    """Each row's `unqueued_rows` (unqueued_rows()), with the rows changed since the last
    ANALYZE read for estimated targets (left None where they cannot be read)."""
    changed: dict[int, int] = {}
    estimated = [r["target_id"] for r in rows if r["estimated"] and not r["pending_jobs"]]
    if estimated:
        try:
            with db.translated(), conn.transaction():  # a savepoint where one is open (doctor)
                found = conn.execute(
                    queries.get("changed_since_analyze"), {"targets": estimated}
                ).fetchall()
            changed = {target_id: int(n) for target_id, n in found if n is not None}
        except (psycopg.Error, exceptions.EmbedWorkerError):
            pass
    for row in rows:
        row["unqueued_rows"] = unqueued_rows(row, changed.get(row["target_id"]))


def _add_locked(conn: db.Connection, rows: list[dict[str, Any]]) -> None:
    """Each row's `counts_skipped`: why its counts are `?` where they were to be exact (a small
    table, or --exact) and another session's lock on its table stopped the count (status
    never waits for a table's lock: the count gave up at the session's lock_timeout): which
    session holds or awaits that lock, as migrate names the sessions it waits for. None where
    nothing did; left None where the locks cannot be read."""
    for row in rows:
        row["counts_skipped"] = None
    unknown = {r["target_id"]: r for r in rows if r["total_rows"] is None and not r["estimated"]}
    if not unknown:
        return
    try:
        with db.translated(), conn.transaction():  # a savepoint where one is open (doctor)
            found = conn.execute(
                queries.get("count_lock_holders"), {"targets": list(unknown)}
            ).fetchall()
    except (psycopg.Error, exceptions.EmbedWorkerError):
        return
    holders: dict[int, list[str]] = {}
    for target_id, table, pid, application, state, age, granted in found:
        holders.setdefault(target_id, []).append(
            f"pid {pid} ({application or 'no application_name'}, {state or 'state not shown'}"
            + (f", transaction open {age:.0f} s" if age is not None else "")
            + f") {'holds' if granted else 'waits for'} ACCESS EXCLUSIVE on {table}"
        )
    for target_id, said in holders.items():
        unknown[target_id]["counts_skipped"] = "; ".join(said)


VERIFICATION = ("verified_rows", "last_verified", "verify_pass_rows", "verify_pass_started")


def _add_verification(conn: db.Connection, rows: list[dict[str, Any]]) -> None:
    """Each row's verification by `sweep(verify => true)` (sql/64_verify.sql): the rows of the
    last complete pass and when it finished, the rows of the pass in progress and when it
    started (None: never verified). Left None where the view cannot be read."""
    for row in rows:
        row.update(dict.fromkeys(VERIFICATION))
    try:
        with db.translated(), conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            found = cur.execute(queries.compose("verification")).fetchall()
    except (psycopg.Error, exceptions.EmbedWorkerError):
        return
    by_id = {r["target_id"]: r for r in found}
    for row in rows:
        if (verified := by_id.get(row["target_id"])) is not None:
            row.update(
                verified_rows=verified["verified_rows"],
                last_verified=verified["last_verified"],
                verify_pass_rows=verified["pass_rows"],
                verify_pass_started=verified["pass_started"],
            )


def eta_seconds(row: dict[str, Any], now: datetime | None = None) -> float | None:
    """Pending rows at the recent rate, leaving out rows that failed and wait for another
    attempt (a rate says nothing of them), and documents embedded in pieces, each timed by
    its own chunks left (document_eta_seconds(): a rate of rows says nothing of a document of
    40,000 chunks); the longest of these, since they go on side by side, each measured so.
    None when nothing else is pending, or something pending has no rate yet."""
    if row["deferred_reason"]:
        return None
    documents = row.get("documents_in_progress") or []
    fresh = (row["pending_jobs"] or 0) - (row.get("retrying_rows") or 0) - len(documents)
    rate = row["rows_per_second"] or 0.0
    etas: list[float] = []
    if fresh > 0:
        if rate <= 0:
            return None
        etas.append(float(fresh) / float(rate))
    now = now or datetime.now(UTC)
    for doc in documents:
        left = document_eta_seconds(doc, now)
        if left is None:
            return None
        etas.append(left)
    return max(etas, default=None)


def document_eta_seconds(doc: dict[str, Any], now: datetime) -> float | None:
    """A document in pieces' chunks left at its own pace: the chunks it committed over the time
    since its first piece was (the piece in flight stands in for the first's, whose time the
    record does not hold); None until a second piece is recorded."""
    done, started, updated = doc["chunks_done"], doc["started_at"], doc["updated_at"]
    if not done or started is None or updated is None or updated <= started:
        return None
    elapsed = float((now - started).total_seconds())
    if elapsed <= 0:
        return None
    left = max((doc["chunks_estimated"] or done) - done, 0)
    return float(left) * elapsed / float(done)


def _add_retrying(conn: db.Connection, rows: list[dict[str, Any]]) -> None:
    """Each row's `retrying_rows` (pending rows whose job failed and waits for another attempt),
    `retry_error` (the latest such error) and `retry_attempts` (the most attempts spent), read
    from the lanes of targets with pending work (queries.sql: retrying_keys; lanes of many
    messages are not read). Left at 0/None where the lanes cannot be read."""
    for row in rows:
        row.update(retrying_rows=0, retry_error=None, retry_attempts=None)
    busy = {row["target_id"]: row for row in rows if row["pending_jobs"]}
    if not busy:
        return
    found: dict[int, list[tuple[int, str, int]]] = {}
    try:
        with db.translated(), conn.transaction():  # a savepoint where one is open (doctor)
            targets = conn.execute(
                queries.compose("target_lanes"), {"target_ids": list(busy)}
            ).fetchall()
            by_name = {(schema, table, column): tid for tid, _, _, schema, table, column in targets}
            lanes = {lane for _, live, backfill, *_ in targets for lane in (live, backfill)}
            for lane in sorted(lanes):
                cur = conn.execute(
                    queries.compose("retrying_keys", queue_table=sql.Identifier("pgmq", lane))
                )
                for tid, schema, table, column, keys, error, attempts in cur:
                    target_id = (
                        tid if isinstance(tid, int) else by_name.get((schema, table, column))
                    )
                    if target_id is not None and target_id in busy:
                        found.setdefault(target_id, []).append((keys, error, attempts))
    except (psycopg.Error, exceptions.EmbedWorkerError):
        return  # no right to read the queue, a lane not there: the status without it
    for target_id, parts in found.items():
        row = busy[target_id]
        row["retrying_rows"] = min(sum(k for k, _, _ in parts), row["pending_jobs"])
        row["retry_error"] = parts[-1][1]
        row["retry_attempts"] = max(a for _, _, a in parts)


def _add_documents(conn: db.Connection, rows: list[dict[str, Any]]) -> None:
    """Chunked targets' long documents: `documents_in_progress` (each embedded a piece at a
    time: key, chunks done and estimated, since when), `documents_over_ceiling` (documents
    the worker refuses, EMBED_MAX_DOCUMENT_BYTES) and `documents_no_text` (documents with no
    text to embed, settled without a chunk), from embeddings.document_progress. Left empty
    where it cannot be read (a role without the worker's grants), but for `documents_no_text`
    of chunked targets: None, not known."""
    for row in rows:
        row.update(documents_in_progress=[], documents_over_ceiling=0, documents_no_text=0)
    by_id = {row["target_id"]: row for row in rows}
    try:
        with db.translated(), conn.transaction():  # a savepoint where one is open (doctor)
            found = conn.execute(queries.compose("long_documents")).fetchall()
    except (psycopg.Error, exceptions.EmbedWorkerError):
        for row in rows:  # not known: unqueued_rows() must not count them as unqueued
            if row["chunks"] is not None:
                row["documents_no_text"] = None
        return
    for target_id, key, state, done, estimated, size, ceiling, started, updated in found:
        target = by_id.get(target_id)
        if target is None:
            continue
        if state == "over_ceiling":
            target["documents_over_ceiling"] += 1
            target.setdefault("ceiling_bytes", ceiling)
            continue
        if state == "no_text":
            target["documents_no_text"] += 1
            continue
        target["documents_in_progress"].append(
            {
                "key": key,
                "chunks_done": done,
                "chunks_estimated": estimated,
                "bytes": size,
                "started_at": started,
                "updated_at": updated,
            }
        )
