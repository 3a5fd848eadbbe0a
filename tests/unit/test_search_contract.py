"""The search result's shape, as docs/http.md pins it for POST /search, `search --json` and the
Python API: every field the table documents is in a result, and nothing else is."""

from __future__ import annotations

import re

from tests.support.docs import DOCS
from worker.retrieval.results import search_result


def documented_fields() -> set[str]:
    text = (DOCS / "http.md").read_text()
    section = text.split("Each result, best first", 1)[1].split("\n\n| function |", 1)[0]
    fields: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            fields |= set(re.findall(r"`([a-z_]+)`", line.split("|")[1]))
    return fields


def test_the_documented_result_fields_are_a_results_fields() -> None:
    result = search_result(1, 0.25, "It takes 14 days.", 1, headings=["Refunds"], page=2)
    assert documented_fields() == set(result)
    assert (result["headings"], result["page"]) == (["Refunds"], 2)
