"""Objects for unit tests that need no database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from worker.pipeline.messages import Job, parse
from worker.target import Target


def target(**overrides: Any) -> Target:
    values: dict[str, Any] = {
        "id": 1,
        "schema": "public",
        "table": "docs",
        "embedding_column": "embedding",
        "embedding_type": "halfvec",
        "embedding_dims": 384,
        "content_column": "body",
        "content_function": None,
        "model": "gte-small",
        "key_columns": ("id",),
        "key_types": ("int8",),
        "queue": "embedding_jobs",
    }
    values.update(overrides)
    # As embeddings_internal.target_name() writes a plain name.
    values.setdefault(
        "qualified_name", f"{values['schema']}.{values['table']}.{values['embedding_column']}"
    )
    return Target(**values)


def job(message: Any, targets: dict[int, Target], *, msg_id: int = 1, read_ct: int = 1) -> Job:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return parse((msg_id, read_ct, now, now, message), targets)
