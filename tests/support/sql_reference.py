"""The SQL reference (docs/sql.md) and the list of the public API (sql/90_privileges.sql), read
by the test that keeps them equal to each other and to the database."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "sql.md"
PRIVILEGES = REPO / "sql" / "90_privileges.sql"
COMPAT = REPO / "sql" / "95_compat_0_3_0.sql"
# The page's list of the forwarders kept for workers of 0.3.0: its section's `embeddings.<name>(`
# items, each a signature as regprocedure spells it.
_COMPAT_SECTION = "## Kept for workers of 0.3.0"

# What the page's "Who may call it:" lines say, by their first words (the longest first).
RIGHTS = {
    "the schema's owner and worker roles": "owner and workers",
    "the schema's owner": "owner",
    "anyone": "anyone",
}


@dataclass(frozen=True)
class Documented:
    """One `### embeddings.<name>` section of the page."""

    name: str
    signature: str | None  # the first sql block of a function's section, normalized; a view's: None
    rights: str | None  # a value of RIGHTS, None when the section says none
    examples: int  # sql blocks besides the signature


def normalized(signature: str) -> str:
    """One line, single spaces, none inside the parentheses' edges."""
    flat = re.sub(r"\s+", " ", signature).strip()
    return flat.replace("( ", "(").replace(" )", ")")


def documented(text: str | None = None) -> dict[str, Documented]:
    """The page's sections, by object name (`embeddings.search`)."""
    text = PAGE.read_text() if text is None else text
    found: dict[str, Documented] = {}
    sections = re.split(r"^### ", text, flags=re.MULTILINE)[1:]
    for section in sections:
        heading, _, body = section.partition("\n")
        body = re.split(r"^## ", body, flags=re.MULTILINE)[0]
        name = heading.strip()
        blocks = re.findall(r"^```sql\n(.*?)^```", body, flags=re.MULTILINE | re.DOTALL)
        signature = None
        if blocks and blocks[0].startswith(name + "("):
            signature = normalized(blocks.pop(0))
        rights = None
        said = re.search(r"^Who may call it: (.*)$", body, flags=re.MULTILINE)
        if said:
            rights = next((v for k, v in RIGHTS.items() if said.group(1).startswith(k)), None)
        found[name] = Documented(name, signature, rights, len(blocks))
    return found


def api_lists(text: str | None = None) -> dict[str, list[str]]:
    """The arrays of sql/90_privileges.sql (`api_anyone`, `api_owner`, `api_owner_and_workers`,
    `internal_anyone`): the signatures each lists, as written (regprocedure[], or text[] where
    the functions are made from the list)."""
    text = PRIVILEGES.read_text() if text is None else text
    lists = re.findall(
        r"^\s*(\w+) CONSTANT (?:regprocedure|text)\[\] := ARRAY\[(.*?)\](?:::regprocedure\[\])?;",
        text,
        flags=re.MULTILINE | re.DOTALL,
    )
    return {name: re.findall(r"'([^']+)'", re.sub(r"--[^\n]*", "", body)) for name, body in lists}


def compat_listed(text: str | None = None) -> list[str]:
    """The signatures docs/sql.md lists as kept for workers of 0.3.0, as written."""
    text = PAGE.read_text() if text is None else text
    if _COMPAT_SECTION not in text:
        return []
    section = re.split(r"^## ", text.split(_COMPAT_SECTION, 1)[1], flags=re.MULTILINE)[0]
    return re.findall(r"^- `(embeddings\.\w+\([^`]*\))`", section, flags=re.MULTILINE)


def compat_lists(text: str | None = None) -> dict[str, list[str]]:
    """The forwarders sql/95_compat_0_3_0.sql lets PUBLIC run (`anyone`) and those it leaves
    to the schema's owner (`owner_only`), as written."""
    return api_lists(COMPAT.read_text() if text is None else text)
