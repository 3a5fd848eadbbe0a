"""embeddings_internal.nonblank_pattern() (sql/32_access.sql), the one definition of blank
content in SQL, names exactly the characters Python's str.isspace() calls white space: those
the worker's str.strip() takes away (tests/integration/test_blank_content.py runs it)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

SQL = Path(__file__).resolve().parents[2] / "sql" / "32_access.sql"
NAMED = {"t": "\t", "n": "\n", "v": "\v", "f": "\f", "r": "\r"}


def pattern_class() -> set[str]:
    """The characters of the bracket expression the function returns, read from its source."""
    found = re.search(
        r"FUNCTION embeddings_internal\.nonblank_pattern\(\).*?SELECT E'\[\^(.*?)\]'",
        SQL.read_text(),
        re.S,
    )
    assert found, "nonblank_pattern() not found in sql/32_access.sql"
    body = found.group(1).replace("\\\\", "\\")  # the E'' literal's doubled backslashes
    chars: list[str] = []
    for atom in re.findall(r"\\u[0-9a-fA-F]{4}|\\[tnvfr]|.", body, re.S):
        if atom.startswith("\\u"):
            chars.append(chr(int(atom[2:], 16)))
        elif atom.startswith("\\"):
            chars.append(NAMED[atom[1]])
        else:
            chars.append(atom)  # ("-" between two characters: a range)
    return expand(chars)


def expand(chars: list[str]) -> set[str]:
    out: set[str] = set()
    i = 0
    while i < len(chars):
        if i + 2 < len(chars) and chars[i + 1] == "-":
            out.update(chr(c) for c in range(ord(chars[i]), ord(chars[i + 2]) + 1))
            i += 3
        else:
            out.add(chars[i])
            i += 1
    return out


def test_the_class_is_pythons_white_space() -> None:
    assert pattern_class() == {chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()}
