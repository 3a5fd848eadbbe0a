"""ExtractedDocument: what every format becomes, the text and where its sections and pages are;
and TextBuilder, which the formats that are not text already (HTML, DOCX) write it with.

Every size derived from a document is bounded here, whatever the bytes: a title is cut at
MAX_TITLE characters, a heading in a heading path at MAX_HEADING (each on a word boundary; a
heading's words past it left in the section's text: cut_heading()), a heading path is at most
MAX_DEPTH deep, a
document has at most MAX_SECTIONS sections (later headings stay in the text of the last one) and
a PDF at most MAX_PAGES pages. So the context header in front of every chunk is bounded too."""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from functools import cached_property

from worker import exceptions

Headings = tuple[str, ...]  # the heading path of a section: its heading and those above it

MAX_TITLE = 200  # characters
MAX_HEADING = 200  # characters of one heading
MAX_DEPTH = 9  # headings in a path (DOCX has nine levels, HTML and Markdown six)
MAX_SECTIONS = 20_000
MAX_PAGES = 20_000

_SPACES = re.compile(r"\s+")
_WORD = re.compile(r"\S+")  # what collapse_spaces() keeps apart


@dataclass(frozen=True)
class Section:
    """A part of the text under one heading path; `text[start:end]` is its body (the heading's
    own line is not in it: the context header carries the heading)."""

    headings: Headings
    start: int
    end: int


@dataclass(frozen=True)
class ExtractedDocument:
    """A document as text. `sections` cover the text's bodies in order, without overlapping:
    one section with no heading covers the whole text of a format without headings (text,
    PDF). `pages` (PDF only) maps a page number, from 1, to its [start, end) in the text."""

    format: str
    text: str
    title: str | None
    sections: tuple[Section, ...]
    pages: dict[int, tuple[int, int]] = field(default_factory=dict)

    def page_at(self, offset: int) -> int | None:
        """The page holding the character at `offset` (a chunk's start), None without pages."""
        numbers, starts = self._page_starts
        found = bisect.bisect_right(starts, offset)
        return numbers[found - 1] if found else None

    def page_of(self, start: int, end: int) -> int | None:
        """The page holding most of the text in [start, end) (a chunk's), the first of equals;
        None without pages. A chunk that begins in a page's last words (its overlap with the
        chunk before) and runs on into the next page is the next page's."""
        numbers, starts = self._page_starts
        if not numbers:
            return None
        best, most = self.page_at(start), 0
        # From the page holding `start` (or the first one after it) to the last starting in range.
        for i in range(max(bisect.bisect_right(starts, start) - 1, 0), len(numbers)):
            page_start, page_end = self.pages[numbers[i]]
            if page_start >= end:
                break
            held = min(end, page_end) - max(start, page_start)
            if held > most:
                best, most = numbers[i], held
        return best

    @cached_property
    def _page_starts(self) -> tuple[list[int], list[int]]:
        numbers = sorted(self.pages)
        return numbers, [self.pages[n][0] for n in numbers]


def whole(format: str, text: str, title: str | None = None) -> ExtractedDocument:
    """A document with no headings: one section, the whole text."""
    return ExtractedDocument(format, text, title, (Section((), 0, len(text)),))


def collapse_spaces(text: str) -> str:
    """HTML's and Word's inline whitespace: any run of it is one space; none at the ends."""
    return _SPACES.sub(" ", text).strip()


def cut_heading(text: str, limit: int = MAX_HEADING) -> tuple[str, int]:
    """A heading as a heading path holds it, and the offset in `text` of the first word it does
    not hold (len(text): none). The path holds the heading's words, spaces collapsed, when they
    fit in `limit` characters; else the words that fit before an ellipsis (a first word that
    does not fit alone is cut in it). The section's text starts at that offset, so that the
    words past the cut are in a chunk's text, while the header in front of every chunk of the
    section stays within the model's budget."""
    whole = collapse_spaces(text)
    if len(whole) <= limit:
        return whole, len(text)
    length = -1
    for word in _WORD.finditer(text):
        length += 1 + len(word.group())  # the space before it and the word
        if length > limit - 1:  # (the ellipsis takes one)
            held = collapse_spaces(text[: word.start()])
            return (held or whole[: limit - 1]) + "…", word.start()
    raise AssertionError("a heading over its limit has a word past it")


def headline(text: str, limit: int = MAX_HEADING) -> str:
    """A heading's or title's text: its spaces collapsed, cut on a word boundary to at most
    `limit` characters, as cut_heading() cuts a heading (a title cut mid-word put half a word
    in every chunk's context header)."""
    return cut_heading(text, limit)[0]


class TextBuilder:
    """Writes a document's blocks as text, a blank line between two, and records a section per
    heading: its path (the heading under the nearest heading of a higher level) and its body,
    from the end of the heading's line to the next heading. Checks the size as it goes, so a
    huge document fails before all of it is held as text."""

    def __init__(self, format: str, max_bytes: int) -> None:
        self.format = format
        self.max_bytes = max_bytes
        self.title: str | None = None
        self._parts: list[str] = []
        self._length = 0  # characters so far
        self._bytes = 0  # their UTF-8 bytes, for the ceiling
        self._path: list[tuple[int, str]] = []  # (level, text) of the current headings
        self._sections: list[Section] = []
        self._section_start = 0
        self._rest: int | None = None  # where the words past a cut heading start

    def paragraph(self, text: str) -> None:
        """A block of text, as it is (collapse its spaces first where the format wants it)."""
        if text.strip():
            self._append(text)

    def heading(self, level: int, text: str) -> None:
        """A heading of `level` (1 the highest): it ends the current section and starts one.
        The text holds all of it; the heading path, what cut_heading() keeps, and the section's
        text starts at the words it does not. Past MAX_SECTIONS sections a heading is a
        paragraph of the last one."""
        text = collapse_spaces(text)
        if not text:
            return
        if len(self._sections) >= MAX_SECTIONS - 1:
            self._append(text)
            return
        level = min(level, MAX_DEPTH)
        self._close_section(self._length)
        while self._path and self._path[-1][0] >= level:
            self._path.pop()
        held, rest = cut_heading(text)
        self._path.append((level, held))
        start = self._length + (2 if self._parts else 0)  # after the blank line before it
        self._append(text)
        self._section_start = self._length
        self._rest = start + rest if rest < len(text) else None

    def build(self) -> ExtractedDocument:
        text = "".join(self._parts)
        self._close_section(len(text))
        sections = tuple(self._sections) or (Section((), 0, len(text)),)
        return ExtractedDocument(self.format, text, self.title, sections)

    def _append(self, text: str) -> None:
        if self._parts:
            text = "\n\n" + text
        self._bytes += len(text.encode())
        if self.max_bytes and self._bytes > self.max_bytes:
            raise too_large(self.format, self.max_bytes)
        self._parts.append(text)
        self._length += len(text)

    def _close_section(self, end: int) -> None:
        # The body starts after the blank line that follows its heading (or the text's start),
        # or at the words of its heading that its path does not hold.
        start = min(self._section_start + (2 if self._section_start else 0), end)
        if self._rest is not None:
            start, self._rest = self._rest, None
        if self._path or end > start:
            path = tuple(text for _, text in self._path)
            self._sections.append(Section(path, start, end))


def too_large(format: str, max_bytes: int) -> exceptions.DocumentTooLarge:
    return exceptions.DocumentTooLarge(
        format,
        f"its text is over EMBED_MAX_DOCUMENT_BYTES={max_bytes:,} bytes; raise the ceiling "
        "or split the document",
    )
