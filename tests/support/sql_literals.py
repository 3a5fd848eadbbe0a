"""String constants in SQL text that read differently when standard_conforming_strings is off
(tests/unit/test_escape_literals.py, tests/security/test_installed_names.py), found with
Postgres' own scanner (pglast)."""

from __future__ import annotations

from collections.abc import Iterator

from pglast.parser import ParseError, scan


def plain_literals_with_backslashes(sql: str) -> Iterator[str]:
    """Each plain ('...') string constant in `sql`, or in a dollar-quoted body in it, at any
    depth, that holds a backslash."""
    for token in scan(sql):
        if token.name != "SCONST":
            continue
        raw = sql[token.start : token.end + 1]
        if raw.startswith("'") and "\\" in raw:
            yield raw
        elif raw.startswith("$"):
            tag_end = raw.index("$", 1) + 1
            body = raw[tag_end : len(raw) - tag_end]
            try:
                inner = list(plain_literals_with_backslashes(body))
            except ParseError:  # a body that is not SQL (a regular expression's $r$): no literals
                continue
            yield from inner
