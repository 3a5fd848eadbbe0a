"""The frames between the worker and a parse process, both ways: a JSON header and a payload of
bytes, preceded by their two lengths (PREFIX). A request carries what to parse and its budget;
an answer carries a document (its text as the payload; its title, sections and pages in the
header) or why there is none.

The worker trusts nothing in an answer: the process that sends it has just parsed hostile bytes
and may have been made to say anything. Sizes are checked before anything is read, the text
must be UTF-8, and a document is rebuilt only when every section and page lies within its text,
in order, and its title and headings keep the bounds of worker/pipeline/documents/extracted.py.
No answer is unpickled or evaluated: JSON and a string, checked field by field."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

from worker.pipeline.documents.detection import FORMATS
from worker.pipeline.documents.extracted import (
    MAX_DEPTH,
    MAX_HEADING,
    MAX_PAGES,
    MAX_SECTIONS,
    MAX_TITLE,
    ExtractedDocument,
    Section,
)

PREFIX = struct.Struct(">IQ")  # the header's length, the payload's length
MAX_HEADER = 16 * 2**20  # an answer's header: paths and sections at their bounds fit in a few MiB
READY, DOCUMENT, UNREADABLE, MEMORY = "ready", "document", "unreadable", "memory"

Header = dict[str, Any]


class WireError(Exception):
    """A frame that is not what the protocol says (a parse process gone wrong)."""


def frame(header: Header, payload: bytes = b"") -> list[bytes]:
    """The parts of a frame, to be written in order (the payload is not copied)."""
    encoded = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode()
    return [PREFIX.pack(len(encoded), len(payload)) + encoded, payload]


def read_frame(
    read: Callable[[int], bytes], *, max_payload: int, max_header: int = MAX_HEADER
) -> tuple[Header, bytes]:
    """A frame, read with `read(n)` (exactly n bytes, or EOFError); its sizes checked first."""
    header_size, payload_size = PREFIX.unpack(read(PREFIX.size))
    if header_size > max_header or payload_size > max_payload:
        raise WireError(f"a frame of {header_size:,} + {payload_size:,} bytes, over its bound")
    try:
        header = json.loads(read(header_size))
    except ValueError as exc:
        raise WireError(f"a header that is not JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("kind", ""), str):
        raise WireError("a header that is not an object")
    return header, read(payload_size)


# --- requests -----------------------------------------------------------------------------------
def request(
    *,
    format: str | None,
    is_bytes: bool,
    max_bytes: int,
    cpu_seconds: int,
    memory_bytes: int,
) -> Header:
    """What a parse process is asked: the content (the payload: base64 text when `is_bytes`,
    else the text itself, UTF-8) read as `format` (None: detected) under these bounds."""
    return {
        "format": format,
        "base64": is_bytes,
        "max_bytes": max_bytes,
        "cpu_seconds": cpu_seconds,
        "memory_bytes": memory_bytes,
    }


# --- documents ----------------------------------------------------------------------------------
def document_header(document: ExtractedDocument) -> Header:
    """A document's header; its text goes as the payload. A heading path is sent as a tree of
    headings (each with the index of its parent), so that a path shared by many sections is
    sent once."""
    paths: list[list[Any]] = []
    ids: dict[tuple[str, ...], int] = {(): -1}
    sections = []
    for section in document.sections:
        for depth in range(1, len(section.headings) + 1):
            prefix = section.headings[:depth]
            if prefix not in ids:
                ids[prefix] = len(paths)
                paths.append([ids[prefix[:-1]], prefix[-1]])
        sections.append([ids[section.headings], section.start, section.end])
    return {
        "kind": DOCUMENT,
        "format": document.format,
        "title": document.title,
        "paths": paths,
        "sections": sections,
        "pages": [[n, start, end] for n, (start, end) in sorted(document.pages.items())],
    }


def document_from(header: Header, payload: bytes) -> ExtractedDocument:
    """The document an answer describes, checked; WireError when anything is off."""
    try:
        text = payload.decode()
    except UnicodeDecodeError:
        raise WireError("a text that is not UTF-8") from None
    format, title = header.get("format"), header.get("title")
    if format not in FORMATS:
        raise WireError(f"an unknown format {format!r}")
    if title is not None and not (isinstance(title, str) and 0 < len(title) <= MAX_TITLE):
        raise WireError("a title out of bounds")
    paths = _paths(header.get("paths"))
    sections = tuple(
        Section(paths[p], start, end)
        for p, start, end in _spans(header.get("sections"), len(text), MAX_SECTIONS, len(paths))
    )
    if not sections:
        raise WireError("a document without sections")
    pages: dict[int, tuple[int, int]] = {}
    for n, start, end in _spans(header.get("pages"), len(text), MAX_PAGES, MAX_PAGES + 1):
        if n != len(pages) + 1:
            raise WireError("pages out of order")
        pages[n] = (start, end)
    return ExtractedDocument(format, text, title, sections, pages)


def _paths(found: Any) -> dict[int, tuple[str, ...]]:
    """Heading paths by index (-1: no heading), from the tree an answer sends."""
    if not isinstance(found, list) or len(found) > MAX_SECTIONS * MAX_DEPTH:
        raise WireError("heading paths out of bounds")
    paths: dict[int, tuple[str, ...]] = {-1: ()}
    for index, item in enumerate(found):
        match item:
            case [int(parent), str(heading)] if -1 <= parent < index:
                path = (*paths[parent], heading)
            case _:
                raise WireError("a heading path that is not [parent, heading]")
        if not 0 < len(heading) <= MAX_HEADING or len(path) > MAX_DEPTH:
            raise WireError("a heading out of bounds")
        paths[index] = path
    return paths


def _spans(found: Any, length: int, most: int, first_bound: int) -> list[tuple[int, int, int]]:
    """[[x, start, end], ...]: at most `most`, -1 <= x < first_bound, in order within the text."""
    if not isinstance(found, list) or len(found) > most:
        raise WireError("spans out of bounds")
    spans = []
    previous = 0
    for item in found:
        match item:
            case [int(x), int(start), int(end)] if -1 <= x < first_bound:
                pass
            case _:
                raise WireError("a span that is not [index, start, end]")
        if not previous <= start <= end <= length:
            raise WireError("a span outside its text, or out of order")
        spans.append((x, start, end))
        previous = end
    return spans
