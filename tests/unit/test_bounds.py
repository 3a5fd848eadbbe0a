"""How long a statement that runs a table owner's code may run (worker/pipeline/bounds.py), and
where the bounds come from."""

from __future__ import annotations

from tests.support.factories import target
from worker import db
from worker.config import PG_INTEGER_MAX, SECONDS_MAX, Settings
from worker.pipeline import bounds, pieces
from worker.pipeline.batch import Row


def test_the_bound_is_the_setting_plus_an_allowance_per_row_or_chunk() -> None:
    rows = [Row(target(), str(i)) for i in range(3)]
    assert bounds.owner_code_ms(1.0) == 1000
    assert bounds.owner_code_ms(2.5, rows) == 2500 + 3 * bounds.OWNER_CODE_MS_PER_ROW
    chunked = Row(target(), "9")
    chunked.chunks = pieces.DocumentChunks(chunks=[object()] * 40, hashes=[])  # type: ignore[list-item]
    assert bounds.work([chunked, *rows]) == 43


def test_the_bound_at_the_settings_ceiling_is_still_a_statement_timeout() -> None:
    """EMBED_OWNER_CODE_TIMEOUT_SECONDS at its ceiling, plus the rows' allowance, passed the
    largest statement_timeout Postgres takes: every statement failed on its SET."""
    rows = [Row(target(), str(i)) for i in range(1000)]
    assert bounds.owner_code_ms(SECONDS_MAX, rows) == PG_INTEGER_MAX


def test_a_rows_error_names_the_setting_that_bounds_it() -> None:
    error = bounds.owner_code_error("loading the content", 1015)
    assert "1.015 s" in error and "EMBED_OWNER_CODE_TIMEOUT_SECONDS" in error


def test_the_defaults_are_one_and_the_same_everywhere() -> None:
    """The settings' defaults, what a batch built without settings takes, and what a connection
    made without settings waits for a lock."""
    settings = Settings()
    assert pieces.Limits() == pieces.Limits.of(settings)
    assert pieces.Limits().owner_code_seconds == settings.owner_code_timeout_seconds
    assert settings.lock_timeout_ms == db.DEFAULT_LOCK_TIMEOUT_MS
