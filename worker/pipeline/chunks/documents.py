"""The load stage's reading of a chunked target's content: plain text split as it is, or a
document (a bytea column, or a format given to watch(): docs/documents.md) extracted to text and
split a section at a time, each chunk with its context header (worker/pipeline/documents/).

Parsing runs here, in the worker's load stage, never in the application's transaction. A
document that cannot be read raises DocumentError naming its format; the caller fails that row
alone, for good (the same bytes fail the same way again)."""

from __future__ import annotations

import base64
from typing import Any, Protocol

from worker.pipeline.chunking import ChunkSource, Splitter
from worker.pipeline.documents.extraction import extract
from worker.pipeline.documents.headers import HeaderTemplate
from worker.pipeline.documents.splitting import DocumentSplitter
from worker.pipeline.documents.stream import DocumentStream
from worker.pipeline.targets import Target


class ChunkReader(Protocol):
    def open(self, content: str) -> ChunkSource:
        """The row's chunks, read as far as they are taken."""
        ...

    def size(self, content: str, stream: ChunkSource) -> int:
        """The bytes the ceiling (EMBED_MAX_DOCUMENT_BYTES) and the progress record count."""
        ...


class TextReader:
    """Plain text, chunked as it is (every chunked target before documents)."""

    def __init__(self, splitter: Splitter) -> None:
        self._splitter = splitter

    def open(self, content: str) -> ChunkSource:
        return self._splitter.stream(content)

    def size(self, content: str, stream: ChunkSource) -> int:
        return len(content.encode())


class DocumentReader:
    """Documents of `format` ("auto": detected from the bytes), a bytea column's loaded as
    base64 (embeddings.content_sql()); the ceiling is on the extracted text."""

    def __init__(
        self, splitter: DocumentSplitter, *, format: str, is_bytes: bool, max_bytes: int
    ) -> None:
        self._splitter = splitter
        self._format = None if format == "auto" else format
        self._is_bytes = is_bytes
        self._max_bytes = max_bytes

    def open(self, content: str) -> ChunkSource:
        data: bytes | str = base64.b64decode(content) if self._is_bytes else content
        document = extract(data, max_bytes=self._max_bytes, format=self._format)
        return DocumentStream(self._splitter, document, content)

    def size(self, content: str, stream: ChunkSource) -> int:
        return len(stream.text.encode())


def reader_for(target: Target, tokenizer: Any, max_document_bytes: int) -> ChunkReader:
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
        max_bytes=max_document_bytes,
    )
