"""The query set and its relevance labels, and how a label on an object becomes a label on a
row or on a chunk.

Queries live in two committed files beside this module:
- `exact.json`: exact-term queries (an object's name, a parameter name, an error message, a
  constant), generated from the source's structure by `python -m bench.quality.generate`;
- `paraphrase.json`: descriptions of what one object does in other words, written by hand from
  that object's docstring.

Each query lists the objects that answer it (`Judgement`): the object's qualified name, the
grade (2: the object the query is about; 1: another that partly answers it) and the anchor,
the part of the object's text the answer lies in:
- `heading`: the qualified name and signature line;
- `summary`: the heading and the docstring's first paragraph;
- `raise:<Exception>: <message>`: that `Raises` line;
- `data:<NAME>`: the module's `NAME = value` line;
- `mention:<identifier>`: the identifier's first occurrence in the docstring.

For rows, the relevant items are the objects' rows. For chunks, each anchor's text is located
in its module's page, and the relevant item is the chunk holding most of it (the earliest on a
tie, as when the overlap between two chunks holds all of it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.quality.stdlib import DocObject, Page

HERE = Path(__file__).resolve().parent
QUERY_FILES = (HERE / "exact.json", HERE / "paraphrase.json")


@dataclass(frozen=True)
class Judgement:
    object: str
    anchor: str
    grade: int


@dataclass(frozen=True)
class Query:
    id: str
    type: str  # exact | paraphrase
    kind: str  # name | parameter | error | constant | paraphrase
    text: str
    relevant: tuple[Judgement, ...]

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Query:
        return cls(
            id=item["id"],
            type=item["type"],
            kind=item["kind"],
            text=item["text"],
            relevant=tuple(Judgement(**j) for j in item["relevant"]),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "kind": self.kind,
            "text": self.text,
            "relevant": [j.__dict__ for j in self.relevant],
        }


@dataclass(frozen=True)
class ChunkSpan:
    id: int
    module: str
    start: int
    end: int


def load(paths: Sequence[Path] = QUERY_FILES) -> list[Query]:
    queries: list[Query] = []
    for path in paths:
        queries.extend(Query.from_json(q) for q in json.loads(path.read_text())["queries"])
    return queries


def word(identifier: str) -> re.Pattern[str]:
    """`identifier` as a whole word (a dotted prefix such as `difflib.` is allowed)."""
    return re.compile(rf"(?<!\w){re.escape(identifier)}(?!\w)")


def needle(obj: DocObject, anchor: str) -> tuple[int, int]:
    """Where the anchor lies in `obj.text()`: (start, end); ValueError if it is not there."""
    text = obj.text()
    kind, _, value = anchor.partition(":")
    if kind == "heading":
        found: tuple[int, int] | None = (0, len(obj.heading()))
    elif kind == "summary":
        found = (0, len(obj.summary()))
    elif kind == "raise":
        found = _find(text, f"Raises {value}")
    elif kind == "data":
        found = _find_line(text, f"\n{value} = ")
    elif kind == "mention":
        match = word(value).search(text, len(obj.heading()))
        found = match.span() if match else None
    else:
        raise ValueError(f"unknown anchor kind {anchor!r}")
    if found is None:
        raise ValueError(f"{anchor!r} is not in the text of {obj.qualname}")
    return found


def _find(text: str, part: str) -> tuple[int, int] | None:
    start = text.find(part)
    return (start, start + len(part)) if start >= 0 else None


def _find_line(text: str, prefix: str) -> tuple[int, int] | None:
    start = text.find(prefix)
    if start < 0:
        return None
    end = text.find("\n", start + 1)
    return start + 1, end if end >= 0 else len(text)


def equivalents(objects: Iterable[DocObject]) -> dict[str, list[str]]:
    """qualname -> the other objects with the very same docstring (posixpath.join and
    ntpath.join; a method and its copy in a subclass): a query built from one's doc is
    answered by each of them just as well."""
    by_doc: dict[str, list[str]] = {}
    for obj in objects:
        if obj.kind != "module":
            by_doc.setdefault(obj.doc, []).append(obj.qualname)
    return {
        name: [other for other in group if other != name]
        for group in by_doc.values()
        if len(group) > 1
        for name in group
    }


def expanded(query: Query, same_doc: dict[str, list[str]]) -> list[Judgement]:
    """The query's judgements, plus for a paraphrase the objects sharing its object's doc."""
    judgements = list(query.relevant)
    if query.type == "paraphrase":
        for j in query.relevant:
            judgements.extend(Judgement(o, j.anchor, j.grade) for o in same_doc.get(j.object, []))
    return judgements


def row_qrels(
    judgements: Iterable[Judgement], row_ids: dict[str, int], objects: dict[str, DocObject]
) -> dict[int, int]:
    qrels: dict[int, int] = {}
    for j in judgements:
        needle(objects[j.object], j.anchor)  # the anchor must be there for rows too
        row = row_ids[j.object]
        qrels[row] = max(qrels.get(row, 0), j.grade)
    return qrels


def chunk_qrels(
    judgements: Iterable[Judgement],
    objects: dict[str, DocObject],
    pages: dict[str, Page],
    chunks: dict[str, list[ChunkSpan]],
) -> dict[int, int]:
    qrels: dict[int, int] = {}
    for j in judgements:
        obj = objects[j.object]
        start, end = needle(obj, j.anchor)
        offset = pages[obj.module].sections[obj.qualname][0]
        chunk = holding(chunks[obj.module], offset + start, offset + end)
        qrels[chunk.id] = max(qrels.get(chunk.id, 0), j.grade)
    return qrels


def holding(spans: Sequence[ChunkSpan], start: int, end: int) -> ChunkSpan:
    """The chunk holding most of [start, end); the earliest of equals."""
    best = max(spans, key=lambda c: (min(c.end, end) - max(c.start, start), -c.start))
    if min(best.end, end) <= max(best.start, start):
        raise ValueError(f"no chunk overlaps [{start}, {end})")
    return best
