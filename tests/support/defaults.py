"""The SQL side's defaults of each remote kind (embeddings.provider_defaults(),
embeddings.reranker_defaults()) against the worker's classes of those kinds: one table, two
sides that must agree."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg


def assert_sql_defaults_are_the_classes(
    conn: psycopg.Connection[Any], function: str, columns: dict[str, str], kinds: Iterable[Any]
) -> None:
    """`embeddings.<function>()`'s rows, by provider, are `kinds`' by name: each column of
    `columns` the value of the class attribute named beside it."""
    rows = conn.execute(
        f"SELECT {', '.join(columns)} FROM embeddings.{function}() ORDER BY provider"
    ).fetchall()
    assert rows == [
        tuple(getattr(kind, attribute) for attribute in columns.values())
        for kind in sorted(kinds, key=lambda k: k.name)
    ]
