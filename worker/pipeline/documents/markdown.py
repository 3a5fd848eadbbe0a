"""Markdown: the text is the source as written (so offsets are the source's), split into
sections at its headings, ATX (`## Refunds`) and setext (a line underlined with `===` or
`---`), outside fenced code blocks. Only headings are parsed: the rest of the markup says
nothing about where a section ends, and the model reads it well enough as it is.

Linear in the text: a line is looked at once, by patterns that cannot backtrack (no pattern
holds two quantifiers that can match the same characters), and a heading's closing `#`s are
taken off by string methods. A document has at most MAX_SECTIONS sections: later headings stay
in the text of the last one. A heading longer than a heading path holds (cut_heading()) leaves
its words past the cut in its section's text."""

from __future__ import annotations

import re
from dataclasses import dataclass

from worker.pipeline.documents.extracted import (
    MAX_SECTIONS,
    MAX_TITLE,
    ExtractedDocument,
    Section,
    cut_heading,
    headline,
)

_ATX = re.compile(r" {0,3}(#{1,6})(?:[ \t]|$)")  # the opening sequence; the text follows
_SETEXT = re.compile(r" {0,3}(=+|-+)[ \t]*")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_LINE = re.compile(r"[^\n]*\n?")
_SETEXT_LINES = 8  # a setext heading's text is its paragraph's first lines; the rest, its body's


@dataclass(frozen=True)
class _Heading:
    level: int
    text: str
    start: int  # where its first line starts
    end: int  # where the line after it starts
    body: int  # where its section's text starts: `end`, or its words past the cut


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
        sections.append(Section(tuple(t for _, t in path), heading.body, end))
    first = headings[0] if headings else None
    title = headline(first.text, MAX_TITLE) if first is not None and first.level == 1 else None
    return ExtractedDocument("markdown", text, title, tuple(sections))


def _headings(text: str) -> list[_Heading]:
    found: list[_Heading] = []
    fence: str | None = None  # the fence that opened the code block we are in
    paragraph: list[tuple[int, str]] = []  # (start, line) of the paragraph's first lines
    position = 0
    for match in _LINE.finditer(text):
        line = match.group()
        if not line:
            break
        start, position = position, position + len(line)
        content = line.rstrip("\n").rstrip("\r")
        opened = _FENCE.match(content)
        if fence is not None or opened:
            fence, paragraph = _fence_after(opened, fence), []
            continue
        heading = _heading(content, paragraph, start, position)
        if heading is not None:
            paragraph = []
            if heading.text:
                found.append(heading)
            if len(found) == MAX_SECTIONS - 1:
                break
        elif content.strip() and not content.startswith("    "):
            if len(paragraph) <= _SETEXT_LINES:  # (one more says where the rest starts)
                paragraph.append((start, content))
        else:
            paragraph = []
    return found


def _fence_after(opened: re.Match[str] | None, fence: str | None) -> str | None:
    """The fence open after this line: the one it opens, or `fence` unless this line closes it."""
    if fence is None:
        assert opened is not None
        return opened.group(1)
    if opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence):
        return None
    return fence


def _heading(
    content: str, paragraph: list[tuple[int, str]], start: int, end: int
) -> _Heading | None:
    """The heading this line is (an ATX heading, or the underline of a setext heading's
    paragraph), else None."""
    atx = _ATX.match(content)
    if atx:
        after = content[atx.end() :]
        text = _without_attributes(_atx_text(after))
        held, rest = cut_heading(text)
        # (_atx_text() took off the spaces before the text, and only spaces)
        at = start + atx.end() + len(after) - len(after.lstrip(" \t"))
        return _Heading(len(atx.group(1)), held, start, end, at + rest if rest < len(text) else end)
    underline = _SETEXT.fullmatch(content)
    if underline and paragraph:
        level = 1 if underline.group(1)[0] == "=" else 2
        lines = paragraph[:_SETEXT_LINES]
        text = _without_attributes(" ".join(line for _, line in lines).rstrip())
        held, rest = cut_heading(text)
        body = _in_source(lines, rest) if rest < len(text) else end
        if len(paragraph) > _SETEXT_LINES:  # the lines past the first ones: text, not lost
            body = min(body, paragraph[_SETEXT_LINES][0])
        return _Heading(level, held, paragraph[0][0], end, body)
    return None


def _in_source(paragraph: list[tuple[int, str]], offset: int) -> int:
    """Where the character at `offset` of the paragraph's lines joined by spaces (not one of
    those spaces) is in the source."""
    joined = 0
    for start, line in paragraph:
        if offset < joined + len(line):
            return start + offset - joined
        joined += len(line) + 1
    raise AssertionError("an offset past the paragraph")


def _atx_text(rest: str) -> str:
    """An ATX heading's text, from what follows its opening `#`s: without its closing sequence
    (`#`s after a space, or nothing but `#`s) and the spaces around it."""
    text = rest.strip(" \t")
    bare = text.rstrip("#")
    if bare != text and (not bare or bare[-1] in " \t"):
        text = bare.rstrip(" \t")
    return text


def _without_attributes(text: str) -> str:
    """A heading's text without the attribute list that names its anchor (`## Install {#setup}`,
    `{: #setup .tip}`: Pandoc, MkDocs' attr_list, Docusaurus): an id for links, not text."""
    if not text.endswith("}"):
        return text
    opening = text.rfind("{")
    inner = text[opening + 1 : -1].strip().removeprefix(":").strip()
    if opening < 0 or not inner.startswith("#") or "{" in inner:
        return text
    return text[:opening].rstrip(" \t")
