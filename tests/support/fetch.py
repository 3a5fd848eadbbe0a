"""A statement's one row, or its one value, for tests that expect exactly that much back."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.abc import Params, QueryNoTemplate


def fetch_row(
    conn: psycopg.Connection[Any], query: QueryNoTemplate, params: Params | None = None
) -> Any:
    """The first row of `query` (a failed assertion when there is none)."""
    row = conn.execute(query, params).fetchone()
    assert row is not None, f"no row from {query!r}"
    return row


def fetch_value(
    conn: psycopg.Connection[Any], query: QueryNoTemplate, params: Params | None = None
) -> Any:
    """The first column of `query`'s first row."""
    return fetch_row(conn, query, params)[0]
