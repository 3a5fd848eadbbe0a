"""Markdown: the text is the source as written (so offsets are the source's), split into
sections at its headings, ATX (`## Refunds`) and setext (a line underlined with `===` or
`---`), outside fenced code blocks. Only headings are parsed: the rest of the markup says
nothing about where a section ends, and the model reads it well enough as it is."""

from __future__ import annotations

import re
from dataclasses import dataclass

from worker.pipeline.documents.extracted import ExtractedDocument, Section, collapse_spaces

_ATX = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))??(?:[ \t]+#+)?[ \t]*")
_SETEXT = re.compile(r" {0,3}(=+|-+)[ \t]*")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_LINE = re.compile(r"[^\n]*\n?")


@dataclass(frozen=True)
class _Heading:
    level: int
    text: str
    start: int  # where its first line starts
    end: int  # where the line after it starts


def extract(text: str) -> ExtractedDocument:
    headings = _headings(text)
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    if not headings or headings[0].start > 0:  # the text before the first heading
        end = headings[0].start if headings else len(text)
        sections.append(Section((), 0, end))
    for k, heading in enumerate(headings):
        while path and path[-1][0] >= heading.level:
            path.pop()
        path.append((heading.level, heading.text))
        end = headings[k + 1].start if k + 1 < len(headings) else len(text)
        sections.append(Section(tuple(t for _, t in path), heading.end, end))
    first = headings[0] if headings else None
    title = first.text if first is not None and first.level == 1 else None
    return ExtractedDocument("markdown", text, title, tuple(sections))


def _headings(text: str) -> list[_Heading]:
    found: list[_Heading] = []
    fence: str | None = None  # the fence that opened the code block we are in
    paragraph: list[tuple[int, str]] = []  # (start, line) of the paragraph so far
    position = 0
    for match in _LINE.finditer(text):
        line = match.group()
        if not line:
            break
        start, position = position, position + len(line)
        content = line.rstrip("\n").rstrip("\r")
        opened = _FENCE.match(content)
        if fence is not None:
            if opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence):
                fence = None
            continue
        if opened:
            fence, paragraph = opened.group(1), []
            continue
        atx = _ATX.fullmatch(content)
        if atx:
            level, title = len(atx.group(1)), collapse_spaces(atx.group(2) or "")
            found.append(_Heading(level, title, start, position))
            paragraph = []
            continue
        underline = _SETEXT.fullmatch(content)
        if underline and paragraph:
            level = 1 if underline.group(1)[0] == "=" else 2
            title = collapse_spaces(" ".join(line for _, line in paragraph))
            found.append(_Heading(level, title, paragraph[0][0], position))
            paragraph = []
            continue
        if content.strip() and not content.startswith("    "):
            paragraph.append((start, content))
        else:
            paragraph = []
    return [h for h in found if h.text]
