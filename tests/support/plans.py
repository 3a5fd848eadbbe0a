"""The plans Postgres chose for the statements a call runs, functions' statements included
(auto_explain, its output sent to the client as notices): to check that a statement inside one
of our functions reads through an index, not the whole table."""

from __future__ import annotations

from typing import Any

import psycopg


def nested_plans(conn: psycopg.Connection[Any], statement: str, params: Any = None) -> list[str]:
    """The plan of `statement` and of every statement it runs, one text each, in order."""
    plans: list[str] = []

    def keep(notice: psycopg.errors.Diagnostic) -> None:
        plans.append(notice.message_primary or "")

    conn.add_notice_handler(keep)
    try:
        conn.execute("LOAD 'auto_explain'")
        conn.execute("SET auto_explain.log_min_duration = 0")
        conn.execute("SET auto_explain.log_nested_statements = on")
        conn.execute("SET auto_explain.log_level = notice")
        conn.execute(statement, params)
    finally:
        conn.execute("RESET auto_explain.log_min_duration")
        conn.remove_notice_handler(keep)
    return plans
