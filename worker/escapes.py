"""Tenants' text written so that a terminal shows it rather than obeys it.

Tenants name tables and write the content, errors and headings that reach an operator's
terminal: through the CLI's tables and reports, text log lines, and `curl`ed /metrics label
values. No imports of our own: the models' side (which may not reach the database) uses it too.
"""

from __future__ import annotations

import re

# What a terminal acts on rather than shows: the C0 and C1 controls and DEL (an escape sequence
# moves the cursor, clears the screen, sets the title, writes a clipboard) and the bidirectional
# marks, overrides and isolates (which reorder the text after them).
_UNSHOWN = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def visible(text: str) -> str:
    """`text` with each character a terminal would act on written as its escape (`\\x1b`,
    `\\n`, `\\u202e`): for a line of human output, which must stay one line, as it reads."""
    return _UNSHOWN.sub(lambda found: ascii(found.group())[1:-1], text)


def label(text: str) -> str:
    """`text` as one label value a terminal shows: visible(), with each backslash of `text`
    written twice first, so that two names never share a label (a table named `t\\x1b` and one
    named `t` + ESC would both show as `t\\x1b` through visible() alone: one series for two
    tables). Names without a backslash or a control character, which alerts are written
    against, are unchanged."""
    return visible(text.replace("\\", "\\\\"))


def shown_literal(text: str) -> str:
    """`text` as an SQL string literal (`'O''Reilly'`) for a statement we print for someone to
    run (a fix, a hint), never one we send: names in it may be a tenant's, and a quote in them
    must end nothing. Written as psycopg's sql.Literal writes it (an escape string, `E'a\\\\b'`,
    once a backslash is in it, so that it reads the same whatever standard_conforming_strings
    is), here because the models' side may not import psycopg."""
    quoted = text.replace("'", "''")
    if "\\" in text:
        return "E'" + quoted.replace("\\", "\\\\") + "'"
    return "'" + quoted + "'"
