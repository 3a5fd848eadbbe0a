"""An extracted document's chunks, a section at a time: a heading always starts a chunk (no
chunk holds the end of one section and the start of the next), and a long section is split
by the token budget as any text is (worker/pipeline/chunking.py). Each chunk carries its
heading path, its page (PDF) and the context header embedded in front of it.

The header's tokens are taken from the section's budget, so that header and chunk together fit
the budget the target was given; a header never takes more than half of it (a deep heading
path does not leave the body a few tokens). A document with neither title nor headings (plain
text) has an empty header, one section and so exactly the chunks `Splitter.split` makes; so
does a document whose only text is its headings (its headings are its chunks). A heading with
no text of its own, whose path the next section's does not extend (a heading before a sibling's,
or at the end), is a chunk of its own, under its parent's path: its text is in some chunk."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from worker.pipeline.chunking import Chunk, Splitter, chunk_digest
from worker.pipeline.documents.extracted import ExtractedDocument, Headings
from worker.pipeline.documents.headers import HeaderTemplate


@dataclass(frozen=True)
class DocumentChunk:
    """A chunk of an extracted document: `chunk` is the exact slice `text[start:end]` of the
    document's text (offsets into the whole text); `header` goes in front of it for the model."""

    chunk: Chunk
    headings: Headings
    page: int | None
    header: str

    @property
    def embedding_input(self) -> str:
        return self.header + self.chunk.text

    def digest(self, model: str) -> str:
        """The identity for vector reuse: what the model reads, so a retitled document's chunks
        are embedded again."""
        return chunk_digest(model, self.embedding_input)


class DocumentSplitter:
    """Splits extracted documents for one model, budget and header template; thread-safe."""

    def __init__(
        self,
        tokenizer: Any,
        chunk_tokens: int,
        chunk_overlap: int,
        template: HeaderTemplate | None = None,
    ) -> None:
        self._tokenizer = tokenizer
        self._body = Splitter(tokenizer, chunk_tokens, chunk_overlap)  # checks the numbers
        self.chunk_tokens = chunk_tokens
        self.chunk_overlap = chunk_overlap
        self.template = template or HeaderTemplate()

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens of each text on its own, special tokens excluded."""
        return self._body.count_tokens(texts)

    def split(self, document: ExtractedDocument) -> list[DocumentChunk]:
        return list(self.stream(document))

    def stream(self, document: ExtractedDocument) -> Iterator[DocumentChunk]:
        if not _has_body(document):
            # Its only text is headings ("# Refunds take 14 days", a page that is one <h1>):
            # they are what a user searches for, so they are its chunks, split as plain text
            # is, with no header (it would only repeat them).
            for chunk in self._body.stream(document.text):
                page = document.page_of(chunk.start, chunk.end)
                yield DocumentChunk(chunk, (), page, "")
            return
        seq = 0
        for start, end, headings in _ranges(document):
            for made in self._section(document, start, end, headings, seq):
                yield made
                seq += 1

    def _section(
        self, document: ExtractedDocument, start: int, end: int, headings: Headings, seq: int
    ) -> Iterator[DocumentChunk]:
        """The chunks of document.text[start:end] under the heading path `headings`, numbered
        from `seq`."""
        header = self.template.render(document.title, headings)
        for piece in self._splitter_for(header).stream(document.text[start:end]):
            begin, finish = start + piece.start, start + piece.end
            chunk = Chunk(seq, begin, finish, piece.text, piece.tokens)
            yield DocumentChunk(chunk, headings, document.page_of(begin, finish), header)
            seq += 1

    def _splitter_for(self, header: str) -> Splitter:
        header_tokens = self.count_tokens([header])[0] if header.strip() else 0
        if header_tokens == 0:
            return self._body
        budget = max(self.chunk_tokens - header_tokens, (self.chunk_tokens + 1) // 2)
        return Splitter(self._tokenizer, budget, min(self.chunk_overlap, budget - 1))


def _ranges(document: ExtractedDocument) -> Iterator[tuple[int, int, Headings]]:
    """The ranges of the text to chunk, in order, each under its heading path: each section's
    body, and before it the bare headings (no body of their own) its heading path does not
    hold (a sibling's, another branch's), which would otherwise be in no chunk; after the last,
    the bare headings at the end."""
    bare: list[int] = []  # sections with no body of their own since the last with one
    for i, section in enumerate(document.sections):
        if not document.text[section.start : section.end].strip():
            bare.append(i)
            continue
        yield from _bare_runs(document, bare, section.headings)
        bare = []
        yield section.start, section.end, section.headings
    yield from _bare_runs(document, bare, None)


def _bare_runs(
    document: ExtractedDocument, bare: list[int], next_path: Headings | None
) -> list[tuple[int, int, Headings]]:
    """The headings of the bare sections `bare` (no body of their own) that the heading path of
    the next section with a body (None: there is none) does not hold, as ranges of the text:
    [start, end) from the previous section's end to the section's start (its heading's line),
    consecutive ones together, each with the heading path its first heading is under."""
    runs: list[tuple[int, int, Headings]] = []
    last = -2
    for i in bare:
        headings = document.sections[i].headings
        if next_path is not None and next_path[: len(headings)] == headings:
            continue  # context of the next section: in its heading path
        start = document.sections[i - 1].end if i > 0 else 0
        end = document.sections[i].end
        if runs and last == i - 1:
            runs[-1] = (runs[-1][0], end, runs[-1][2])
        else:
            runs.append((start, end, headings[:-1]))
        last = i
    return runs


def _has_body(document: ExtractedDocument) -> bool:
    """Whether any section has text of its own, besides its heading."""
    return any(document.text[s.start : s.end].strip() for s in document.sections)
