"""An extracted document's chunks as the pipeline reads any text's (worker/pipeline/pieces.py):
one at a time, each a Chunk that knows its heading path, page and context header, with how far
they go (for the estimate of chunks to come) and the row's content they came from (what the
piece cache is keyed by: pieces.Cache.known)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from worker.pipeline.chunking import Chunk, chunk_digest
from worker.pipeline.documents.extracted import ExtractedDocument, Headings
from worker.pipeline.documents.splitting import DocumentSplitter


@dataclass(frozen=True)
class HeadedChunk(Chunk):
    """A document's chunk: `text` the exact slice of the extracted text, `header` what the model
    reads in front of it."""

    headings: Headings = ()
    page: int | None = None
    header: str = ""

    @property
    def embedding_input(self) -> str:
        return self.header + self.text

    def digest(self, model: str) -> str:
        """What the model reads is the identity: a retitled document's chunks are embedded again;
        a chunk without a header keeps the digest a plain text's chunk has."""
        return chunk_digest(model, self.embedding_input)


class DocumentStream:
    """The chunks of `document`, extracted from the row's `content`, split by `splitter`."""

    def __init__(self, splitter: DocumentSplitter, document: ExtractedDocument, content: str):
        self.content = content
        self.text = document.text
        self.format = document.format
        self.position = 0  # where the last chunk ended (a character offset in `text`)
        self._chunks: Iterator[HeadedChunk] = (
            HeadedChunk(
                found.chunk.seq,
                found.chunk.start,
                found.chunk.end,
                found.chunk.text,
                found.chunk.tokens,
                found.headings,
                found.page,
                found.header,
            )
            for found in splitter.stream(document)
        )
        self._produced = 0

    def __iter__(self) -> Iterator[HeadedChunk]:
        return self

    def __next__(self) -> HeadedChunk:
        chunk = next(self._chunks)
        self.position = chunk.end
        self._produced += 1
        return chunk

    @property
    def produced(self) -> int:
        """Chunks so far."""
        return self._produced
