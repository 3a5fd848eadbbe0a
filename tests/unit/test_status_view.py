"""How `embed-worker status` shows estimated counts: marked with ~, unknown ones as ?, and a
progress bar that moves with the exact pending count rather than the embedded estimate."""

from __future__ import annotations

from typing import Any

from worker.cli import status


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
    base["eta_seconds"] = status.eta_seconds(base)
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
