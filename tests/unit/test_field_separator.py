"""The vector side of full-text fields: a content `title || chr(31) || body` is embedded as
`title || ' ' || body` (sql/59_hybrid.sql's fields_tsvector() reads the fields)."""

from __future__ import annotations

from typing import Any, cast

from worker.pipeline.batch import Row, RowState
from worker.pipeline.stages import FIELD_SEPARATOR, _apply_loaded


def loaded(content: str | None) -> Row:
    row = Row(target=cast(Any, None), key="1")
    _apply_loaded(row, {"1": (content, "digest")})
    return row


def test_the_field_separator_is_embedded_as_a_space() -> None:
    row = loaded(f"Statins{FIELD_SEPARATOR}A cohort{FIELD_SEPARATOR}of ten years")
    assert row.content == "Statins A cohort of ten years"
    assert row.state is RowState.READY
    assert row.digest == "digest"  # the stored content's, as loaded


def test_content_without_fields_is_embedded_as_it_is() -> None:
    assert loaded("Statins and breast cancer").content == "Statins and breast cancer"
    assert loaded(FIELD_SEPARATOR).state is RowState.BLANK
    assert loaded(None).state is RowState.BLANK
