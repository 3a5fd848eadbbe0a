"""Tables of the user documentation, read by the tests that keep them equal to the code."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"
METRICS = DOCS / "metrics.md"


@dataclass(frozen=True)
class Documented:
    type: str
    labels: frozenset[str]
    values: dict[str, tuple[str, ...]]  # enumerated labels only


def documented_metrics(text: str | None = None) -> dict[str, Documented]:
    """The `| metric | type | labels | what |` table of docs/metrics.md."""
    text = METRICS.read_text() if text is None else text
    found: dict[str, Documented] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not re.fullmatch(r"`[a-z_]+`", cells[0]):
            continue
        labels: set[str] = set()
        values: dict[str, tuple[str, ...]] = {}
        for part in filter(None, (p.strip() for p in cells[2].split(";"))):
            name, _, listed = part.partition(":")
            name = name.strip().strip("`")
            labels.add(name)
            if listed:
                values[name] = tuple(v.strip().strip("`") for v in listed.split(","))
        found[cells[0].strip("`")] = Documented(cells[1], frozenset(labels), values)
    return found


SECURITY = DOCS / "security.md"


def documented_rights(text: str | None = None) -> dict[str, dict[str, bool]]:
    """The table of roles x actions of docs/security.md: action -> role -> allowed."""
    text = SECURITY.read_text() if text is None else text
    lines = [line.strip() for line in text.splitlines()]
    header = next(i for i, line in enumerate(lines) if line.startswith("| action |"))
    roles = [c.strip() for c in lines[header].strip("|").split("|")][1:]
    found: dict[str, dict[str, bool]] = {}
    for line in lines[header + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert all(c in ("yes", "no") for c in cells[1:]), line
        found[cells[0]] = {role: cell == "yes" for role, cell in zip(roles, cells[1:], strict=True)}
    return found
