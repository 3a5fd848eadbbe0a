"""Named runtime SQL, loaded once from `queries.sql`."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from psycopg import sql

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)

# Starts the text of each query whose header says `-- ours:` (it runs no code of anyone else's:
# no owner-run function, no user table): worker.session_guard trusts the session after it.
OURS = "/* ours */ "
_OURS_LINE = "-- ours:"


@cache
def _all() -> dict[str, str]:
    text = (Path(__file__).with_name("queries.sql")).read_text(encoding="utf-8")
    parts = _HEADER.split(text)
    # parts: [preamble, name1, body1, name2, body2, ...]
    found: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        all_lines = body.strip().splitlines()
        lines = [line for line in all_lines if not line.startswith("--")]
        ours = any(line.startswith(_OURS_LINE) for line in all_lines)
        found[name] = (OURS if ours else "") + "\n".join(lines).strip().rstrip(";")
    return found


def get(name: str) -> str:
    return _all()[name]


def compose(name: str, **identifiers: sql.Composable) -> sql.Composed:
    """Query `name` with its `{placeholders}` filled by psycopg.sql objects."""
    return sql.SQL(get(name)).format(**identifiers)


def ours(name: str) -> bool:
    """Whether query `name` says it runs no one else's code."""
    return get(name).startswith(OURS)


def names() -> list[str]:
    return list(_all())


def queue_table(queue: str) -> sql.Identifier:
    """pgmq's table for `queue` (the name is validated by worker.config)."""
    return sql.Identifier("pgmq", f"q_{queue}")
