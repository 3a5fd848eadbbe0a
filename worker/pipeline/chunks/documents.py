"""The load stage's reading of a chunked target's content: plain text split as it is, or a
document (a bytea column, or a format given to watch(): docs/documents.md) extracted to text and
split a section at a time, each chunk with its context header (worker/pipeline/documents/).

A document is parsed in a parse process, never in the worker's own (worker/pipeline/parsing/):
the load stage asks for the parses of every target's documents of the batch and waits a short
while (worker/pipeline/chunks/parses.py), then opens those done; a document whose parse is not
done yet opens as None (asked for again, `request`, if its queue was full), and its row comes
back for it. Plain text is not parsed, and pays nothing of this. A document that cannot be read
raises DocumentError naming its format (the caller fails that row alone, for good: the same
bytes fail the same way again); one whose parse ran out of its budget or crashed raises
ParseFailed (the row fails this attempt)."""

from __future__ import annotations

import base64
from typing import Any, Protocol

from worker.pipeline.chunking import ChunkSource, Splitter
from worker.pipeline.documents.extraction import extract
from worker.pipeline.documents.headers import HeaderTemplate
from worker.pipeline.documents.splitting import DocumentSplitter
from worker.pipeline.documents.stream import DocumentStream
from worker.pipeline.parsing.budgets import Budgets
from worker.pipeline.parsing.process import Parse, input_size
from worker.pipeline.parsing.service import SERVICE, ParseService
from worker.pipeline.pieces import DocumentId, Limits
from worker.target import Target


class ChunkReader(Protocol):
    parses: bool  # its content goes through a parse process first

    def request(self, key: DocumentId, content: str) -> None:
        """Asks for the content's parse, when it needs one."""
        ...

    def open(self, key: DocumentId, content: str) -> ChunkSource | None:
        """The row's chunks, read as far as they are taken; None while its parse is not done."""
        ...

    def size(self, content: str, stream: ChunkSource) -> int:
        """The bytes the ceiling (EMBED_MAX_DOCUMENT_BYTES) and the progress record count."""
        ...


class TextReader:
    """Plain text, chunked as it is (every chunked target before documents)."""

    parses = False

    def __init__(self, splitter: Splitter) -> None:
        self._splitter = splitter

    def request(self, key: DocumentId, content: str) -> None:
        return

    def open(self, key: DocumentId, content: str) -> ChunkSource:
        return self._splitter.stream(content)

    def size(self, content: str, stream: ChunkSource) -> int:
        return len(content.encode())


class DocumentReader:
    """Documents of `format` ("auto": detected from the bytes), a bytea column's loaded as
    base64 (embeddings_internal.content_sql()); the ceiling is on the extracted text. Those of
    format "text" are plain text: read here, not parsed."""

    def __init__(
        self,
        splitter: DocumentSplitter,
        *,
        format: str,
        is_bytes: bool,
        max_bytes: int,
        budgets: Budgets,
        parser: ParseService = SERVICE,
    ) -> None:
        self._splitter = splitter
        self._format = None if format == "auto" else format
        self._is_bytes = is_bytes
        self._max_bytes = max_bytes
        self._budgets = budgets
        self._parser = parser
        self.parses = format != "text"

    def request(self, key: DocumentId, content: str) -> None:
        if self.parses:
            job = parse_of(content, self._format, self._is_bytes, self._max_bytes, self._budgets)
            self._parser.submit(key, job, processes=self._budgets.processes)

    def open(self, key: DocumentId, content: str) -> ChunkSource | None:
        if not self.parses:
            data: bytes | str = base64.b64decode(content) if self._is_bytes else content
            document = extract(data, max_bytes=self._max_bytes, format="text")
        else:
            outcome = self._parser.take(key)
            if outcome is None:
                self.request(key, content)  # (asked for already, unless the queue was full)
                return None
            if isinstance(outcome, Exception):
                raise outcome
            document = outcome
        return DocumentStream(self._splitter, document, content)

    def size(self, content: str, stream: ChunkSource) -> int:
        return len(stream.text.encode())


def parse_of(
    content: str, format: str | None, is_bytes: bool, max_bytes: int, budgets: Budgets
) -> Parse:
    """The parse of a row's content as `format` (None: detected), within its size's budget."""
    size = input_size(content, is_bytes=is_bytes)
    return Parse(content, format, is_bytes, max_bytes, budgets.for_size(size))


def parse_for(target: Target, limits: Limits, content: str) -> Parse | None:
    """The parse a chunked target's row needs before it is read; None when it needs none
    (plain text, or format 'text'): what DocumentReader.request asks for."""
    format = target.document_format
    if target.chunk_tokens is None or format in (None, "text"):
        return None
    detected = None if format == "auto" else format
    return parse_of(
        content, detected, target.content_bytes, limits.max_document_bytes, limits.parsing
    )


def stored_bytes(target: Target, content: str) -> int:
    """How long the row's content is as the table stores it (a bytea column's content comes as
    base64), for the records of embeddings.documents that status shows."""
    return len(base64.b64decode(content) if target.content_bytes else content.encode())


def reader_for(target: Target, tokenizer: Any, limits: Limits) -> ChunkReader:
    """The reader of target's content. A context header template the worker cannot use raises
    ConfigError (watch() checks it the same way, so only a hand-edited registry gets here)."""
    assert target.chunk_tokens is not None
    overlap = target.chunk_overlap or 0
    if target.document_format is None:
        return TextReader(Splitter(tokenizer, target.chunk_tokens, overlap))
    template = (
        HeaderTemplate() if target.context_header is None else HeaderTemplate(target.context_header)
    )
    return DocumentReader(
        DocumentSplitter(tokenizer, target.chunk_tokens, overlap, template),
        format=target.document_format,
        is_bytes=target.content_bytes,
        max_bytes=limits.max_document_bytes,
        budgets=limits.parsing,
    )
