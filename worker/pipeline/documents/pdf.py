"""PDF, read with pypdf: the text of each page in order, a blank line between two pages, and
where each page's text is, so that a chunk can say which page it starts on. A PDF has no
headings we can trust (its outline, when there is one, points at pages, not at text), so its
text is one section. An encrypted PDF is read when it opens with the empty password (an owner
password only restricts printing or copying); one that needs a password is refused."""

from __future__ import annotations

import io

import pypdf
from pypdf.errors import DependencyError

from worker import exceptions
from worker.pipeline.documents.extracted import (
    MAX_PAGES,
    MAX_TITLE,
    ExtractedDocument,
    Section,
    headline,
    too_large,
)

PAGE_BREAK = "\n\n"


def extract(data: bytes, *, max_bytes: int) -> ExtractedDocument:
    reader = pypdf.PdfReader(io.BytesIO(data))
    if reader.is_encrypted:
        _decrypt(reader)
    if len(reader.pages) > MAX_PAGES:
        raise exceptions.DocumentError(
            "pdf", f"{len(reader.pages):,} pages, more than the {MAX_PAGES:,} a document may have"
        )
    parts: list[str] = []
    pages: dict[int, tuple[int, int]] = {}
    length = size = 0
    for number, page in enumerate(reader.pages, start=1):
        text = (page.extract_text() or "").strip()
        if parts:
            parts.append(PAGE_BREAK)
            length += len(PAGE_BREAK)
        pages[number] = (length, length + len(text))
        parts.append(text)
        length += len(text)
        size += len(text.encode()) + len(PAGE_BREAK)
        if max_bytes and size > max_bytes:  # before the rest of a huge PDF is read
            raise too_large("pdf", max_bytes)
    text = "".join(parts)
    metadata = reader.metadata
    title = headline(metadata.title or "", MAX_TITLE) or None if metadata is not None else None
    return ExtractedDocument("pdf", text, title, (Section((), 0, len(text)),), pages)


def _decrypt(reader: pypdf.PdfReader) -> None:
    try:
        opened = reader.decrypt("")
    except DependencyError as exc:  # AES needs the `cryptography` package
        raise exceptions.DocumentError(
            "pdf", f"encrypted, and cannot be decrypted: {exc}"
        ) from None
    if opened == pypdf.PasswordType.NOT_DECRYPTED:
        raise exceptions.DocumentError(
            "pdf", "encrypted with a password: it cannot be read without it"
        )
