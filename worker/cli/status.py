"""`embed-worker status [TABLE]`: one row per target (TABLE's alone, if given), with progress
bars and an ETA where work is pending, why jobs wait when the worker defers them, and `--watch`
to refresh in place (with `--json`, a line of JSON a refresh).

Reads `embeddings.status`, whose row counts are estimates for large tables (its `estimated`
column; shown with a `~`) so that a status costs the same at ten rows or ten million;
`--exact` reads `embeddings.status_exact`, which scans every watched table."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

from worker import db, exceptions
from worker.cli import output, redraw
from worker.retrieval.targets import not_watched, table_targets
from worker.status import document_eta_seconds, fetch

ESTIMATE_NOTE = (
    "~ estimated from the table's statistics (exact counts: `embed-worker status --exact`, "
    "which scans the tables); pending and failed are always exact."
)
UNKNOWN_NOTE = (
    "? not known: blank rows are not counted for a content function (nor where it fails); an "
    "estimate needs the table analyzed once since watch() (ANALYZE it, or "
    "`embed-worker status --exact`)."
)
BAR_WIDTH = 20


def bar(done: float, total: float, *, width: int = BAR_WIDTH) -> str:
    """`[########............]  40%`; ASCII so that every terminal and log shows it."""
    fraction = 1.0 if total <= 0 else min(max(done / total, 0.0), 1.0)
    filled = int(fraction * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {fraction * 100:3.0f}%"


def count(value: int | None, *, estimated: bool) -> str:
    """`1,234`, `~1,234` for an estimate, `?` when not known (no statistics yet)."""
    if value is None:
        return "?"
    return f"{'~' if estimated else ''}{value:,}"


def progress_done(row: dict[str, Any], wanted: int) -> int:
    """Rows counted as done for the progress bar: never a row a job waits for. Exact counts:
    the embedded rows that no job waits for (a row embedded once and changed since, or held
    back, still has its old vector). Estimates: the rows that no job waits for, since the
    pending count is exact and current, whereas the embedded estimate moves only when the
    table is analyzed."""
    waiting = max(wanted - int(row["pending_jobs"]), 0)
    if row["estimated"] or row["embedded_rows"] is None:
        return waiting
    return min(int(row["embedded_rows"]), waiting)


def progress(row: dict[str, Any], wanted: int) -> tuple[float, float]:
    """The bar's work done and in all, in rows: a row is done when no job waits for it
    (progress_done()); a document embedded in pieces weighs as many rows as its estimated
    chunks are worth (the chunks stored per row done), done in the share of its chunks
    committed: one long document among short ones is most of the work left, not one row of
    many (a 40,502-chunk document 35% done among 14 rows done showed 93%)."""
    done: float = progress_done(row, wanted)
    total: float = wanted
    documents = row.get("documents_in_progress") or []
    committed = sum(int(d["chunks_done"]) for d in documents)
    per_row = max((int(row.get("chunks") or 0) - committed) / max(done, 1), 1.0)
    for doc in documents:
        estimated = max(int(doc["chunks_estimated"] or doc["chunks_done"]), 1)
        weight = estimated / per_row
        done += weight * min(int(doc["chunks_done"]) / estimated, 1.0)
        total += weight - 1  # (its row is one of `wanted`)
    return done, total


def embedded_estimate(row: dict[str, Any]) -> int | None:
    """The embedded rows to show: the view's count, or where an estimate has none (a chunked
    target's documents; a table not analyzed since watch()), the rows no job waits for."""
    known: int | None = row["embedded_rows"]
    if known is not None or not row["estimated"] or row["total_rows"] is None:
        return known
    wanted = int(row["total_rows"]) - int(row["cleared_rows"] or 0)
    wanted -= int(row.get("documents_no_text") or 0)
    return max(wanted - int(row["pending_jobs"]) - int(row["failed_jobs"]), 0)


def render(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return ["no watched tables: register one with SELECT embeddings.watch('table', 'column');"]
    # Each name's backslashes twice, as /metrics labels write them (escapes.label), before the
    # output writes controls as escapes: a table named with a newline and one named with `\n`
    # showed as the same name.
    rows = [{**r, "target": r["target"].replace("\\", "\\\\")} for r in rows]
    table = []
    for r in rows:
        cleared = r["cleared_rows"] or 0
        # rows that should have an embedding (a document with no text never gets one)
        wanted = (r["total_rows"] or 0) - cleared - (r.get("documents_no_text") or 0)
        pending = r["pending_jobs"]
        estimated = bool(r["estimated"])
        shown = bar(*progress(r, wanted)) if pending else "done" if wanted else "-"
        if not pending and r.get("unqueued_rows"):
            shown = "not queued"  # never "done" while rows wait for a job no one queued
        if r.get("stopped"):
            shown = "stopped"  # never "done" while something stops it (see its notes)
        if r["deferred_reason"]:
            eta = "held (see below)"  # not a retry: the worker cannot serve the table now
        elif pending and r.get("retrying_rows", 0) >= pending:
            eta = "retrying"  # only rows that failed: no rate says when, or whether, they pass
        elif pending:
            eta = output.age(r["eta_seconds"]) if r["eta_seconds"] is not None else "no rate yet"
        else:
            eta = "-"
        table.append(
            [
                r["target"],
                r["model"],
                count(r["total_rows"], estimated=estimated),
                count(embedded_estimate(r), estimated=estimated)
                + (
                    f" ({count(r['chunks'], estimated=estimated)} chunks)"
                    if r["chunks"] is not None
                    else ""
                ),
                count(r["cleared_rows"], estimated=estimated),
                f"{pending:,}",
                f"{r['failed_jobs']:,}",
                output.age(r["oldest_pending_seconds"]),
                f"{r['rows_per_second']:.1f}/s",
                shown,
                eta,
            ]
        )
    lines = output.table_lines(
        [
            "target",
            "model",
            "rows",
            "embedded",
            "cleared",
            "pending",
            "failed",
            "oldest pending",
            "recent rate",
            "progress",
            "ETA",
        ],
        table,
    )
    for r in rows:
        lines.extend(notes(r))
    if any(r["cleared_rows"] for r in rows):
        lines.append("")
        lines.append("cleared: rows whose content is empty or blank; they get no embedding.")
    if any(r["estimated"] for r in rows):
        lines.append("")
        lines.append(ESTIMATE_NOTE)
    lines.extend(unknown_notes(rows))
    return lines


def unknown_notes(rows: list[dict[str, Any]]) -> list[str]:
    """What the `?` counts say (a count another session's lock stopped has its own note): a
    target that cannot be served is not counted (its problem, and the fix); otherwise
    UNKNOWN_NOTE's causes."""
    unknown = [
        r
        for r in rows
        if (r["cleared_rows"] is None or embedded_estimate(r) is None)
        and not r.get("counts_skipped")
    ]
    lines = []
    for r in unknown:
        problem = _problem(r)
        if problem is not None:
            lines.append("")
            lines.append(
                f"? not known for {r['target']}: its rows are not counted while it cannot be"
                f" served ({problem['reason']}); fix: {problem['fix']}"
            )
    if any(_problem(r) is None for r in unknown):
        lines.append("")
        lines.append(UNKNOWN_NOTE)
    return lines


def _problem(r: dict[str, Any]) -> dict[str, Any] | None:
    """The target's stopped state `problem` (sql/52_stopped.sql), if it has one: it cannot be
    served as watched (its content column dropped, say), nor are its rows counted."""
    return next((s for s in r.get("stopped") or [] if s["state"] == "problem"), None)


def notes(r: dict[str, Any]) -> list[str]:
    """What a target's table line cannot say: a model change, a deferral, a backfill, an index
    waiting for it; each note preceded by a blank line."""
    lines: list[str] = []
    if r.get("counts_skipped"):
        lines.append("")
        lines.append(
            f"{r['target']}: ? counts skipped, not waited for: its table is locked:"
            f" {r['counts_skipped']}. They show once that lock is released; end that"
            " session's transaction (SELECT pg_terminate_backend(<pid>)) if it should not hold it"
        )
    if r["change_model"]:
        done, total = r["change_done_rows"] or 0, r["change_total_rows"] or 0
        eta = r["change_eta_seconds"]
        lines.append("")
        lines.append(
            f"{r['target']}: changing the model to {r['change_model']}:"
            f" {bar(done, total)} {done:,}/{total:,} rows,"
            f" {r['change_rows_per_second'] or 0:.1f}/s, ETA"
            f" {output.age(eta) if eta is not None else 'no rate yet'}"
            f" ({r['model']} serves searches until the swap)"
        )
    stops = r.get("stopped") or []
    for stop in stops:
        lines.append("")
        lines.append(f"{r['target']}: stopped ({stop['state']}) since {_since(stop['since'])}:")
        lines.append(f"  {stop['reason']}")
        lines.append(f"  fix: {stop['fix']}")
    for doc in r.get("documents_in_progress") or []:
        done, estimated = doc["chunks_done"], doc["chunks_estimated"] or doc["chunks_done"]
        left = document_eta_seconds(doc, datetime.now(UTC))
        lines.append("")
        lines.append(
            f"{r['target']}: document {doc['key']} ({doc['bytes']:,} bytes) embedded in pieces:"
            f" {bar(done, estimated)} {done:,}/~{estimated:,} chunks,"
            f" started {output.age(_seconds_since(doc['started_at']))} ago,"
            + (f" ~{output.age(left)} to go" if left is not None else " no pace yet")
        )
    if r.get("unqueued_rows"):
        lines.append("")
        lines.append(
            f"{r['target']}: not queued: {'~' if r['estimated'] else ''}{r['unqueued_rows']:,}"
            " row(s) have content but no vector, and no job waits for them (their writes"
            " queued nothing: a logical-replication subscriber watched without replica =>"
            " true, or the table's triggers disabled)"
        )
        lines.append(
            "  fix: `embed-worker sweep` (SELECT embeddings.sweep()) until it queues nothing;"
            " on a subscriber, watch the table again with replica => true"
        )
    if r.get("documents_no_text"):
        lines.append("")
        lines.append(
            f"{r['target']}: {r['documents_no_text']:,} document(s) with no text to embed (an"
            " empty page, a PDF of images only): no chunks, not queued again until their content"
            " changes (embeddings.document_progress, state no_text)"
        )
    if r.get("retrying_rows"):
        lines.append("")
        lines.append(
            f"{r['target']}: {r['retrying_rows']:,} row(s) failed and wait for another attempt"
            f" ({r['retry_attempts']} attempt(s) so far; after EMBED_MAX_ATTEMPTS a row goes to"
            f" `embed-worker failures`): {' | '.join(str(r['retry_error']).splitlines())}"
        )
    if r["deferred_reason"] and not any(s["state"] == "held" for s in stops):
        since = _since(r["deferred_since"])
        lines.append("")
        lines.append(
            f"{r['target']}: {r.get('held_jobs') or r['pending_jobs']:,} job(s) held since {since}"
            " (put back without an attempt, not failed):"
        )
        lines.append(f"  {r['deferred_reason']}")
    if r.get("swap_waiting_since") and not any(s["state"] == "swap_waiting" for s in stops):
        lines.append("")
        lines.append(
            f"{r['target']}: the swap to {r['change_model']} waits for its table lock since"
            f" {_since(r['swap_waiting_since'])} ({r['swap_attempts']:,} attempt(s) so far; it"
            f" retries by itself): held by {r['swap_holders'] or 'no session named'}"
        )
    if r["backfill_rows"] is not None:
        lines.append("")
        lines.append(
            f"{r['target']}: backfill: {'~' if r['estimated'] else ''}"
            f"{r['backfill_rows']:,} existing row(s) still to queue"
            " (counted as pending; queued whenever the worker's reads run short)"
        )
    if r.get("last_verified") or r.get("verify_pass_started"):
        lines.append("")
        lines.append(f"{r['target']}: {verification(r)}")
    if r["index_deferred"]:
        lines.append("")
        lines.append(
            f"{r['target']}: its HNSW index is built once the backfill ends;"
            " search scans exactly meanwhile"
        )
    return lines


def _since(value: datetime | str | None) -> str:
    """A timestamp as status shows it (UTC); JSON from the database carries ISO text."""
    if value is None:
        return "?"
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds_since(moment: datetime) -> float:
    return max((datetime.now(UTC) - moment).total_seconds(), 0.0)


def verification(r: dict[str, Any]) -> str:
    """What the verifying sweep (`sweep(verify => true)`) says of the target's vectors."""
    said = []
    if r.get("last_verified"):
        at = r["last_verified"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        said.append(
            f"{r['verified_rows']:,} row(s) verified against their content by the pass"
            f" finished {at}"
        )
    if r.get("verify_pass_started"):
        said.append(f"{r['verify_pass_rows']:,} row(s) verified so far by the pass in progress")
    return "; ".join(said)


def chosen_targets(conn: db.Connection, table: str | None) -> list[int] | None:
    """The ids of `table`'s targets (None: every target's status): of a chunk or side table,
    its target's, whose rows its rows are (said on stderr); or ConfigError when it names no
    table, or one not watched."""
    if table is None:
        return None
    with db.translated():
        name, ids, store_of = table_targets(conn, table)
    if not ids and store_of is not None and store_of.target_id is not None:
        print(store_of.said(name, "its status is that target's, shown here"), file=sys.stderr)
        return [store_of.target_id]
    if not ids:  # a usage error here, as `failures` has it (a search's is the table's)
        raise exceptions.ConfigError(not_watched(conn, name, verb="name"))
    return ids


def show(
    conn: db.Connection, *, as_json: bool, exact: bool = False, targets: list[int] | None = None
) -> None:
    rows = fetch(conn, exact=exact, targets=targets)
    if as_json:
        output.print_json(rows)
    else:
        output.print_lines(render(rows))


def watch(
    conn: db.Connection,
    interval: float,
    header: str,
    *,
    exact: bool = False,
    targets: list[int] | None = None,
    as_json: bool = False,
) -> None:
    """Redraws the status every `interval` seconds until Ctrl-C (worker/cli/redraw.py); with
    `as_json`, writes it as one line of JSON each time instead (newline-delimited JSON: the
    same document as `status --json`, on one line)."""
    if as_json:
        redraw.stream(
            interval,
            lambda: json.dumps(fetch(conn, exact=exact, targets=targets), default=str),
        )
        return
    redraw.every(interval, header, lambda: render(fetch(conn, exact=exact, targets=targets)))
