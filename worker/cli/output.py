"""Printing for the CLI: tables, JSON, ages, previews, and which database a command talks to.
What a tenant wrote (a table's name, content, an error) is shown, never acted on by the terminal:
every cell and field goes through escapes.visible(); JSON escapes it itself."""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from collections.abc import Sequence
from typing import Any

from worker import conninfo
from worker.escapes import visible


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, default=str, indent=2)
    sys.stdout.write("\n")


def width(text: str) -> int:
    """The columns `text` takes on a terminal (as wcwidth() counts them): two for a wide
    character (east_asian_width W or F: CJK, most emoji), none for a combining mark or another
    zero-width one (a joiner, a variation selector), one for the rest. Names are tenants' and
    may be in any script: counted in code points, a column after them did not line up."""
    return sum(_char_width(c) for c in text)


def _char_width(c: str) -> int:
    if unicodedata.combining(c) or unicodedata.category(c) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1


def _padded(text: str, columns: int) -> str:
    return text + " " * (columns - width(text))


def table_lines(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    cells = [[visible(str(c)) for c in row] for row in rows]
    widths = [max(width(c) for c in col) for col in zip(header, *cells, strict=True)]
    lines = ["  ".join(_padded(h, w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append("  ".join(_padded(c, w) for c, w in zip(row, widths, strict=True)).rstrip())
    return lines


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    print("\n".join(table_lines(header, rows)))


def print_fields(fields: Sequence[tuple[str, str]]) -> None:
    """One line per field, its label padded: a record, which has no header row to print."""
    columns = max(width(label) for label, _ in fields)
    print(
        "\n".join(
            f"{_padded(label, columns)}  {visible(value)}".rstrip() for label, value in fields
        )
    )


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def preview(text: str | None, width: int = 90) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def database_line(dsn: str, explicit: str | None) -> str:
    """Which database a command talks to, and why that one."""
    where = conninfo.describe(dsn)
    if explicit:
        return f"database {where}"
    if dsn == "":
        return f"database {where} (from the PG* environment variables)"
    return (
        f"database {where} (the local `make db` cluster: DATABASE_URL and PG* variables are unset)"
    )


def say_database(dsn: str, explicit: str | None) -> None:
    """Tells stderr which database this command uses (stdout stays for results)."""
    say(database_line(dsn, explicit))


def say(line: str) -> None:
    """A line about the command's own doing on stderr (stdout stays for results)."""
    print(f"embed-worker: {visible(line)}", file=sys.stderr)


_QUOTED_IDENTIFIER = re.compile(r'"((?:[^"]|"")*)"')


def visible_sql(text: str) -> str:
    """SQL for an operator to run (a fix doctor prints), its quoted identifiers that hold
    characters a terminal acts on spelled with Unicode escapes (`U&"notes\\001b[2J"`): shown,
    and still the same names when pasted, where visible() would show other names."""

    def spelled(found: re.Match[str]) -> str:
        name = found.group(1)
        if visible(name) == name:
            return found.group(0)
        escaped = (
            f"\\{ord(c):04x}" if visible(c) != c else "\\\\" if c == "\\" else c for c in name
        )
        return 'U&"' + "".join(escaped) + '"'

    return _QUOTED_IDENTIFIER.sub(spelled, text)


def print_lines(lines: Sequence[str]) -> None:
    """Lines of a report, each shown as one line (visible())."""
    print("\n".join(visible(line) for line in lines))
