"""A document in, its text out: `extract(content, max_bytes=..., format=None)`.

Bytes are detected (worker/pipeline/documents/detection.py) unless `format` says what they
are (bytes said to be a PDF or DOCX that are not are refused, saying what they are); a str is
plain text unless `format` says it holds HTML or Markdown. Whatever goes wrong on these bytes,
in detection or in a format's library, becomes one DocumentError that names the format and the
reason: the bytes are the problem, and they fail the same way on a retry. Only MemoryError
passes through as itself (the parse process tells it apart: a budget, not the bytes;
worker/pipeline/parsing/).

The worker never calls this in its own process for a document: a parse process does, under a
time, CPU and memory budget (worker/pipeline/parsing/); plain text needs no parse.
"""

from __future__ import annotations

from worker import exceptions
from worker.pipeline.documents import detection, markdown, pdf, webpage, word
from worker.pipeline.documents.extracted import ExtractedDocument, too_large, whole


def extract(
    content: bytes | str, *, max_bytes: int, format: str | None = None
) -> ExtractedDocument:
    """The text of `content`, its title, sections and (PDF) pages. `max_bytes` (UTF-8 bytes of
    the extracted text; 0: no ceiling) is the setting EMBED_MAX_DOCUMENT_BYTES."""
    if format is not None:
        detection.check_format(format)
    if isinstance(content, str) and format in ("pdf", "docx"):
        raise ValueError(f"a {format} document is bytes, not a str")
    found = format or ("text" if isinstance(content, str) else "unknown")
    try:
        if isinstance(content, str):
            document = _extract_text(found, content, max_bytes)
        else:
            if format is not None:
                detection.check_declared(format, content)
            found = format or detection.detect(content)
            document = _extract_bytes(found, content, max_bytes)
    except (exceptions.DocumentError, MemoryError):
        raise
    except Exception as exc:  # the library's own, whatever it is (RecursionError too)
        raise exceptions.DocumentError(found, _reason(exc)) from exc
    if max_bytes and len(document.text.encode()) > max_bytes:
        raise too_large(found, max_bytes)
    return document


def _extract_bytes(format: str, data: bytes, max_bytes: int) -> ExtractedDocument:
    if format == "pdf":
        return pdf.extract(data, max_bytes=max_bytes)
    if format == "docx":
        return word.extract(data, max_bytes=max_bytes)
    return _extract_text(format, detection.decode_text(format, data), max_bytes)


def _extract_text(format: str, text: str, max_bytes: int) -> ExtractedDocument:
    if max_bytes and len(text.encode()) > max_bytes and format != "html":
        raise too_large(format, max_bytes)  # (HTML's markup does not count: its text may fit)
    if format == "html":
        return webpage.extract(text, max_bytes=max_bytes)
    if format == "markdown":
        return markdown.extract(text)
    return whole("text", text)


def _reason(exc: Exception) -> str:
    detail = " ".join(str(exc).split())[:300] or "no detail"
    return f"cannot be read ({type(exc).__name__}: {detail})"
