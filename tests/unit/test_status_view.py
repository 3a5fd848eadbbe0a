"""How `embed-worker status` shows estimated counts: marked with ~, unknown ones as ?, and a
progress bar that moves with the exact pending count rather than the embedded estimate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from worker import status as status_model
from worker.cli import status
from worker.escapes import label, visible


def row(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "target": "public.docs.embedding",
        "model": "gte-small",
        "total_rows": 10_000_000,
        "embedded_rows": 2_000_000,  # as of the last ANALYZE
        "cleared_rows": 0,
        "pending_jobs": 2_500_000,
        "failed_jobs": 0,
        "oldest_pending_seconds": 60.0,
        "rows_per_second": 500.0,
        "deferred_reason": None,
        "deferred_since": None,
        "chunks": None,
        "estimated": True,
        "backfill_rows": None,
        "index_deferred": False,
        "change_model": None,
    }
    base.update(overrides)
    base["eta_seconds"] = status_model.eta_seconds(base)
    return base


def target_line(lines: list[str]) -> str:
    return next(x for x in lines if x.startswith("public.docs.embedding"))


def test_estimates_are_marked_and_explained() -> None:
    lines = status.render([row()])

    line = target_line(lines)
    assert "~10,000,000" in line and "~2,000,000" in line
    assert " 2,500,000 " in line  # pending: exact, no mark
    assert status.ESTIMATE_NOTE in lines


def test_estimated_progress_follows_the_pending_jobs() -> None:
    line = target_line(status.render([row()]))

    assert "[###############.....]  75%" in line  # 7.5M of 10M not waiting, not 2M embedded


def test_counts_without_statistics_show_as_unknown() -> None:
    lines = status.render([row(embedded_rows=None, cleared_rows=None)])

    assert "?" in target_line(lines).split()


def test_exact_counts_are_unmarked() -> None:
    lines = status.render([row(estimated=False, total_rows=10, embedded_rows=4, pending_jobs=6)])

    line = target_line(lines)
    assert "~" not in line
    assert "[########............]  40%" in line
    assert status.ESTIMATE_NOTE not in lines


def test_a_running_backfill_is_shown_and_marked_when_estimated() -> None:
    text = "\n".join(status.render([row(backfill_rows=1_500_000)]))
    assert "backfill: ~1,500,000 existing row(s) still to queue" in text
    exact = "\n".join(status.render([row(estimated=False, backfill_rows=12)]))
    assert "backfill: 12 existing row(s) still to queue" in exact


def test_a_large_chunked_table_estimates_its_embedded_documents() -> None:
    """Its documents with chunks have no estimate of their own: the rows no job waits for."""
    chunked = row(
        total_rows=40_000, embedded_rows=None, cleared_rows=2, pending_jobs=8, chunks=300_000
    )
    line = target_line(status.render([chunked]))

    assert "~39,990 (~300,000 chunks)" in line
    assert "? " not in line


def test_unknown_counts_are_explained() -> None:
    lines = status.render([row(cleared_rows=None)])

    assert "?" in target_line(lines).split()
    assert status.UNKNOWN_NOTE in lines
    assert status.UNKNOWN_NOTE not in status.render([row()])


def test_rows_waiting_for_a_job_are_never_counted_done() -> None:
    """Every row embedded once, then changed (or its target held): its old vector is still
    there, but a job waits for it."""
    held = row(total_rows=30, embedded_rows=30, pending_jobs=30, estimated=False)
    line = target_line(status.render([held]))

    assert "[....................]   0%" in line
    half = row(total_rows=30, embedded_rows=30, pending_jobs=15, estimated=False)
    assert "[##########..........]  50%" in target_line(status.render([half]))


def test_rows_bound_to_fail_get_no_eta() -> None:
    """A row that failed waits for its next attempt (and may fail again, into `failures`): the
    rate of the rows that passed says nothing of when."""
    failing = row(
        total_rows=21,
        embedded_rows=20,
        pending_jobs=1,
        estimated=False,
        rows_per_second=0.3,
        retrying_rows=1,
        retry_error="loading the content failed: cannot read note 99",
        retry_attempts=2,
    )
    assert failing["eta_seconds"] is None
    lines = status.render([failing])

    assert target_line(lines).split()[-1] == "retrying"
    note = next(x for x in lines if "wait for another attempt" in x)
    assert "1 row(s) failed" in note and "cannot read note 99" in note
    assert "embed-worker failures" in note
    # Beside rows that will pass, the ETA counts only those.
    mixed = row(pending_jobs=10, rows_per_second=1.0, retrying_rows=1, estimated=False)
    assert mixed["eta_seconds"] == 9.0


def test_two_names_never_show_as_one() -> None:
    """`we\\ird"t` + newline + `ab` and `we\\ird"t\\nab` (a backslash, then n) both showed as
    public."we\\ird""t\\nab".embedding; backslashes are doubled, as /metrics labels are."""
    newline, backslash_n = 'public."we\\ird""t\nab".embedding', 'public."we\\ird""t\\nab".embedding'
    shown = {}
    for name in (newline, backslash_n):
        lines = [visible(line) for line in status.render([row(target=name, estimated=False)])]
        shown[name] = lines[2].split()[0]  # the table's first row, as print_lines shows it
    assert shown == {
        newline: 'public."we\\\\ird""t\\nab".embedding',
        backslash_n: 'public."we\\\\ird""t\\\\nab".embedding',
    }
    assert shown[newline] == label(newline)  # as /metrics writes it


def in_pieces(done: int, estimated: int, *, started: float, updated: float) -> dict[str, Any]:
    """A document in progress, started and last written so many seconds ago."""
    now = datetime.now(UTC)
    return {
        "key": "1",
        "chunks_done": done,
        "chunks_estimated": estimated,
        "bytes": 2_400_000,
        "started_at": now - timedelta(seconds=started),
        "updated_at": now - timedelta(seconds=updated),
    }


def test_a_document_in_pieces_weighs_its_chunks_in_the_progress_and_the_eta() -> None:
    """A QA pass: with a 40,502-chunk document 35% done after 4.7 min (14 short rows done
    beside it), status showed "progress 93%, ETA 11-35 s": the bar counted the document as one
    row of 15, and the ETA was its one pending row at the rate of rows."""
    document = in_pieces(14_198, 40_502, started=282, updated=5)
    shown = row(
        estimated=False,
        total_rows=15,
        embedded_rows=15,  # the document has chunks: those of its pieces so far
        pending_jobs=1,
        rows_per_second=0.03,
        chunks=14_198 + 14 * 3,
        documents_in_progress=[document],
    )
    line = target_line(status.render([shown]))
    assert "[#######.............]  35%" in line
    # Its chunks left at its own pace: 26,304 chunks at 14,198 per 282 s.
    assert shown["eta_seconds"] == pytest.approx(26_304 * 282 / 14_198, rel=0.01)
    assert line.split()[-2:] == ["8.7", "min"]
    note = next(x for x in status.render([shown]) if "embedded in pieces" in x)
    assert "14,198/~40,502 chunks" in note and "~8.7 min to go" in note


def test_a_document_with_one_piece_written_has_no_eta_yet() -> None:
    """One piece says nothing of the pace of the rest: no ETA is claimed."""
    first = in_pieces(120, 40_502, started=3, updated=3)
    shown = row(
        estimated=False,
        total_rows=15,
        embedded_rows=15,
        pending_jobs=3,
        rows_per_second=0.5,
        chunks=120 + 12 * 3,
        documents_in_progress=[first],
    )
    assert shown["eta_seconds"] is None
    lines = status.render([shown])
    assert target_line(lines).split()[-3:] == ["no", "rate", "yet"]
    assert "no pace yet" in next(x for x in lines if "embedded in pieces" in x)
    # Rows alone beside it are timed at their rate as before.
    assert row(estimated=False, pending_jobs=2, rows_per_second=0.5)["eta_seconds"] == 4.0


def test_rows_no_job_waits_for_are_not_done() -> None:
    """QA 5b, finding 3: exact counts with rows short of a vector and no job (a subscriber
    watched without replica => true) showed "done"."""
    unqueued = row(estimated=False, total_rows=5, embedded_rows=0, pending_jobs=0)
    unqueued["unqueued_rows"] = status_model.unqueued_rows(unqueued)
    assert unqueued["unqueued_rows"] == 5

    lines = status.render([unqueued])
    assert "not queued" in target_line(lines) and "done" not in target_line(lines)
    assert any("not queued: 5 row(s) have content but no vector" in x for x in lines)


def test_unqueued_rows_is_a_lower_bound_or_unknown() -> None:
    exact = {"estimated": False, "total_rows": 10, "cleared_rows": 2, "failed_jobs": 1}
    # every pending job and dead letter might be one of the rows without a vector
    assert status_model.unqueued_rows({**exact, "embedded_rows": 4, "pending_jobs": 2}) == 1
    assert status_model.unqueued_rows({**exact, "embedded_rows": 8, "pending_jobs": 3}) == 0
    # a content function's blank rows are not counted: not known
    unknown = {**exact, "cleared_rows": None, "embedded_rows": 4, "pending_jobs": 0}
    assert status_model.unqueued_rows(unknown) is None
    estimate = {**exact, "estimated": True, "embedded_rows": 4, "pending_jobs": 0}
    assert status_model.unqueued_rows(estimate) is None  # changed rows not known
    assert status_model.unqueued_rows(estimate, changed_since_analyze=0) == 3
    # rows changed since the ANALYZE may have their vector now: nothing claimed
    assert status_model.unqueued_rows(estimate, changed_since_analyze=3) == 0
    assert status_model.unqueued_rows({**estimate, "pending_jobs": 1}, 0) is None
    # a chunked target's documents with no text get no vector: not read, not known
    chunked = {**exact, "embedded_rows": 4, "pending_jobs": 0, "chunks": 9}
    assert status_model.unqueued_rows({**chunked, "documents_no_text": 1}) == 2
    assert status_model.unqueued_rows({**chunked, "documents_no_text": None}) is None
