"""A statement's one row, or its one value, for tests that expect exactly that much back (or
wait until it is what they expect)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.abc import Params, QueryNoTemplate

from tests.support.process import wait_for


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


def wait_for_row(
    conn: psycopg.Connection[Any],
    query: QueryNoTemplate,
    row: tuple[Any, ...],
    timeout: float,
    what: str,
) -> None:
    """Polls `query` until its first row is `row`; fails after `timeout` seconds."""
    wait_for(lambda: conn.execute(query).fetchone() == row, timeout, what=what)
