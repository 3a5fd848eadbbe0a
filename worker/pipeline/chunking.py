"""Splitting long documents into chunks that each fit the model, by the model's own tokenizer.

A chunk is an exact slice of the document (`text[start:end]`), starts and ends on a token, and
holds at most `chunk_tokens` tokens (special tokens such as [CLS]/[SEP] excluded). Consecutive
chunks overlap by about `chunk_overlap` tokens, and together they cover every token of the text.

How a chunk's end is chosen, in the spirit of a recursive splitter: within the budget, at a
paragraph break (a Markdown heading first); when there is none, at a line break; then at a
sentence end; then at a word start, as late as possible. Only a single word longer than the
budget is cut between two of its tokens. A break too close to the chunk's start (less than a
quarter of the budget in) is not taken, so that a one-line paragraph does not become a chunk of
its own. A heading starts its chunk without overlap: the previous section's tail adds nothing to
a new section's meaning.

Among several breaks of the chosen kind, the one taken is decided by the text around each break
(the lowest crc32 of it, in the later three quarters of the window), not by the chunk's start.
So an edit changes the chunks around it, and the chunks after it soon end where they ended
before: the same text, whose vectors are reused (on stdlib-docstring documents of ~2,000
tokens, one paragraph edited: 83% of the chunks unchanged, against 73% when always taking the
last break; chunks average 143 tokens of a 200 budget instead of 167).

Memory and time stay bounded for very long texts: the text is tokenized in windows of
`WINDOW_CHARS` characters (cut at whitespace, where a WordPiece tokenizer never joins two
sides), and only two int32 offsets plus one byte of break level are kept per token (about
9 bytes per token, ~2 MB for a 1 MB document). Everything after tokenization is index
arithmetic on those arrays. Tokenizing is lazy (`Splitter.stream`): a window is tokenized only
when the next chunk needs it, so the first chunks of a 10 MB document come after milliseconds,
not after the ~20 s its whole tokenization takes (worker/pipeline/pieces.py embeds such a
document a piece at a time). Lazy or not, the chunks are the same.
"""

from __future__ import annotations

import hashlib
import re
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from worker.models import onnx

# Characters tokenized per call. Big enough that per-call overhead vanishes, small enough that
# the tokenizer's own per-token objects (~100+ bytes each) stay a few MB.
WINDOW_CHARS = 32_768

# Share of the window (past the floor) before which a break is chosen only when there is no
# later one of the same strength: chunks stay reasonably full.
LATER_SHARE = 0.25

# Break levels: the lower, the stronger. A token's level says what precedes it.
HEADING, PARAGRAPH, LINE, SENTENCE, WORD, INSIDE_WORD = range(6)
_LEVELS = (HEADING, PARAGRAPH, LINE, SENTENCE, WORD, INSIDE_WORD)

_SENTENCE_END_CODES = np.array([ord(c) for c in ".!?。！？"], dtype=np.uint32)
_CLOSER_CODES = np.array([ord(c) for c in "\"')]}»”’"], dtype=np.uint32)
_HEADING = re.compile(r"#{1,6}(?:\s|$)")
_BLANK_LINE = re.compile(r"\n[^\S\n]*\n")


@dataclass(frozen=True)
class Chunk:
    seq: int
    start: int  # character offsets into the document: text[start:end] is the chunk
    end: int
    text: str
    tokens: int

    @property
    def embedding_input(self) -> str:
        """What the model reads: the chunk's text (a document's chunk puts its context header
        in front: worker/pipeline/documents/stream.py)."""
        return self.text

    def digest(self, model: str) -> str:
        """The chunk's identity for vector reuse: the same text under the same model."""
        return chunk_digest(model, self.text)


def chunk_digest(model: str, text: str) -> str:
    return hashlib.md5(f"{model}\n{text}".encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class TokenSpans:
    """Every token of a text: character start and end, and the break level before it."""

    starts: npt.NDArray[np.int32]
    ends: npt.NDArray[np.int32]
    levels: npt.NDArray[np.int8]

    def __len__(self) -> int:
        return len(self.starts)


class Splitter:
    """Splits texts for one model and one (chunk_tokens, chunk_overlap) setting; thread-safe."""

    def __init__(self, tokenizer: Any, chunk_tokens: int, chunk_overlap: int) -> None:
        if chunk_tokens < 1:
            raise ValueError(f"chunk_tokens must be positive, not {chunk_tokens}")
        if not 0 <= chunk_overlap < chunk_tokens:
            raise ValueError(
                f"chunk_overlap must be between 0 and chunk_tokens - 1, not {chunk_overlap}"
            )
        self.chunk_tokens = chunk_tokens
        self.chunk_overlap = chunk_overlap
        self._tokenizer = tokenizer

    @classmethod
    def from_file(cls, tokenizer_json: Path, chunk_tokens: int, chunk_overlap: int) -> Splitter:
        return cls(
            onnx.load_tokenizer(tokenizer_json, max_tokens=None), chunk_tokens, chunk_overlap
        )

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens of each text on its own, special tokens excluded."""
        encodings = onnx.encode_each(self._tokenizer, texts, add_special_tokens=False)
        return [len(e.ids) for e in encodings]

    def split(self, text: str) -> list[Chunk]:
        """The chunks of `text` in order; none when it holds no token (empty, blank)."""
        return list(self.stream(text))

    def stream(self, text: str) -> ChunkStream:
        """The chunks of `text` in order, tokenized only as far as the next chunk needs."""
        return ChunkStream(self, text)

    def spans(self, text: str) -> TokenSpans:
        """Every token of `text`, tokenized a window at a time."""
        lazy = _LazySpans(self._tokenizer, text)
        n = lazy.ensure(sys.maxsize)
        return TokenSpans(lazy.starts[:n], lazy.ends[:n], lazy.levels[:n])

    def _ranges(self, text: str, spans: _LazySpans) -> Iterator[tuple[int, int, int]]:
        """(i, j, tokens): the token index range [i, j) of each chunk and its token count."""
        budget, overlap = self.chunk_tokens, self.chunk_overlap

        def anchor(k: int) -> int:  # a stable, content-defined rank of the break before token k
            start = int(spans.starts[k])
            return zlib.crc32(text[max(start - 8, 0) : start + 24].encode())

        i = previous_end = 0
        while True:
            # The chunk's window and the break level after it; fewer only at the text's end.
            n = spans.ensure(i + budget + 2)
            if i >= n:
                return
            levels = spans.levels
            # A chunk ends a quarter of the budget in at least, and always past the previous one.
            floor = max(budget // 4, previous_end - i + 1, 1)
            j = n if n - i <= budget else _cut(levels, i, i + budget, floor, anchor)
            j, tokens = self._fit(text, spans, i, j)
            yield i, j, tokens
            if j == n:
                return
            previous_end = j
            if levels[j] == HEADING:
                i = j  # a heading starts a fresh chunk
                continue
            # The next chunk starts at the earliest word start at most `overlap` tokens back.
            lo = max(j - overlap, i + 1)
            words = np.flatnonzero(levels[lo:j] <= WORD)
            i = lo + int(words[0]) if len(words) else j

    def _fit(self, text: str, spans: _LazySpans, i: int, j: int) -> tuple[int, int]:
        """[i, j) shortened until its text alone fits the budget. Only a chunk with an edge
        inside a word can need it: a word's pieces tokenize differently once the word is cut."""
        levels = spans.levels
        if levels[i] != INSIDE_WORD and (j >= spans.known or levels[j] != INSIDE_WORD):
            return j, j - i
        while True:
            tokens = self.count_tokens([text[spans.starts[i] : spans.ends[j - 1]]])[0]
            if tokens <= self.chunk_tokens or j == i + 1:
                return j, tokens
            j -= max(1, tokens - self.chunk_tokens)
            j = max(j, i + 1)


class ChunkSource(Protocol):
    """What a long document is read through a piece at a time (worker/pipeline/pieces.py): a
    text's ChunkStream, or an extracted document's (worker/pipeline/documents/stream.py)."""

    text: str  # the text the chunks are slices of
    position: int  # where the last chunk ended

    @property
    def content(self) -> str:
        """The row's content, as loaded."""
        ...

    @property
    def produced(self) -> int: ...

    def __next__(self) -> Chunk: ...


class ChunkStream:
    """A text's chunks, one at a time (Splitter.stream); `position` says how far the chunks so far
    go, for an estimate of the chunks still to come."""

    def __init__(self, splitter: Splitter, text: str) -> None:
        self.text = text
        self._spans = _LazySpans(splitter._tokenizer, text)
        self._ranges = splitter._ranges(text, self._spans)
        self._seq = 0

    def __iter__(self) -> Iterator[Chunk]:
        return self

    def __next__(self) -> Chunk:
        i, j, tokens = next(self._ranges)
        start, end = int(self._spans.starts[i]), int(self._spans.ends[j - 1])
        chunk = Chunk(self._seq, start, end, self.text[start:end], tokens)
        self._seq += 1
        self.position = end
        return chunk

    position: int = 0  # where the last chunk ended (a character offset)

    @property
    def content(self) -> str:
        """The row's content the chunks came from: the text itself."""
        return self.text

    @property
    def produced(self) -> int:
        """Chunks so far."""
        return self._seq

    @property
    def tokens(self) -> int:
        """Tokens found so far."""
        return self._spans.known


class _LazySpans:
    """The tokens of a text (as TokenSpans), tokenized a window at a time as far as asked for.
    The arrays grow by doubling: a 10 MB text is copied a few times, not once per window."""

    def __init__(self, tokenizer: Any, text: str) -> None:
        self._tokenizer = tokenizer
        self._text = text
        self._windows = _windows(text, WINDOW_CHARS)
        self._starts = np.zeros(1024, np.int32)
        self._ends = np.zeros(1024, np.int32)
        self._levels = np.zeros(1024, np.int8)
        self.known = 0  # tokens found so far
        self.chars = 0  # characters tokenized so far
        self.complete = False

    @property
    def starts(self) -> npt.NDArray[np.int32]:
        return self._starts[: self.known]

    @property
    def ends(self) -> npt.NDArray[np.int32]:
        return self._ends[: self.known]

    @property
    def levels(self) -> npt.NDArray[np.int8]:
        return self._levels[: self.known]

    def ensure(self, k: int) -> int:
        """Tokenizes until k tokens are known or the text is done; returns how many are known."""
        while self.known < k and not self.complete:
            window = next(self._windows, None)
            if window is None:
                self.complete = True
                break
            offset, piece = window
            self.chars = offset + len(piece)
            encoding = self._tokenizer.encode(piece, add_special_tokens=False)
            pairs = np.asarray(encoding.offsets, dtype=np.int32).reshape(-1, 2)
            keep = pairs[:, 1] > pairs[:, 0]  # zero-width tokens carry no text
            self._append(pairs[keep, 0] + offset, pairs[keep, 1] + offset)
        return self.known

    def _append(self, starts: npt.NDArray[np.int32], ends: npt.NDArray[np.int32]) -> None:
        if not len(starts):
            return
        if self.known == 0:
            levels = break_levels(self._text, starts, ends)
        else:  # the break before the window's first token needs the token before it
            levels = break_levels(
                self._text,
                np.concatenate((self._starts[self.known - 1 : self.known], starts)),
                np.concatenate((self._ends[self.known - 1 : self.known], ends)),
                first=False,
            )[1:]
        total = self.known + len(starts)
        if total > len(self._starts):
            size = max(total, 2 * len(self._starts))
            self._starts = np.resize(self._starts, size)
            self._ends = np.resize(self._ends, size)
            self._levels = np.resize(self._levels, size)
        self._starts[self.known : total] = starts
        self._ends[self.known : total] = ends
        self._levels[self.known : total] = levels
        self.known = total


def _cut(
    levels: npt.NDArray[np.int8], i: int, limit: int, floor: int, anchor: Callable[[int], int]
) -> int:
    """Where a chunk starting at token i ends (exclusive, at most `limit`): at a break of the
    strongest kind found in (i + floor, limit]. Among several, the choice depends on the text
    around each break (`anchor`, lowest wins) rather than on i, within the later part of the
    window: so that after an edit, the chunks that follow soon end where they ended before
    and keep their text (and vectors). Word breaks just fill the chunk."""
    lo = min(i + floor, limit)
    window = levels[lo : limit + 1]
    for level in _LEVELS:
        found = np.flatnonzero(window <= level)
        if not len(found):
            continue
        if level >= WORD:
            return lo + int(found[-1])
        later = found[found >= int(len(window) * LATER_SHARE)]
        pool = later if len(later) else found
        return lo + int(min(pool, key=lambda f: anchor(lo + int(f))))
    return limit


def _windows(text: str, size: int) -> Iterator[tuple[int, str]]:
    """(offset, piece) covering `text`, each piece cut after whitespace where there is some."""
    start = 0
    n = len(text)
    while start < n:
        end = min(start + size, n)
        if end < n:
            # Cut just after the last whitespace of the window: no token spans a whitespace.
            cut = max(text.rfind(" ", start, end), text.rfind("\n", start, end))
            if cut > start:
                end = cut + 1
        yield start, text[start:end]
        start = end


def break_levels(
    text: str,
    starts: npt.NDArray[np.int32],
    ends: npt.NDArray[np.int32],
    *,
    first: bool = True,
) -> npt.NDArray[np.int8]:
    """The break before each token, judged from the characters between it and the previous one
    (vectorized: a 1 MB text has ~250k tokens). Only the part of `text` the tokens span is read;
    `first`: the first token starts the text (else its level is left to the caller)."""
    n = len(starts)
    levels = np.full(n, INSIDE_WORD, dtype=np.int8)
    if n == 0:
        return levels
    base = max(int(starts[0]) - 2, 0)  # the characters before each gap, with a closer's
    part = text[base : int(ends[-1])]
    gap_start = ends[:-1].astype(np.int64)
    gap_end = starts[1:].astype(np.int64)
    has_gap = gap_end > gap_start
    newlines = np.array([m.start() + base for m in re.finditer("\n", part)], dtype=np.int64)
    line_breaks = np.searchsorted(newlines, gap_end) - np.searchsorted(newlines, gap_start)
    # The character before each gap, stepping over one closing quote or bracket.
    codes = np.frombuffer(part.encode("utf-32-le"), dtype=np.uint32)
    before = codes[np.maximum(gap_start - 1, 0) - base]
    closed = np.isin(before, _CLOSER_CODES) & (gap_start > 1)
    before = np.where(closed, codes[np.maximum(gap_start - 2, base) - base], before)
    sentence = np.isin(before, _SENTENCE_END_CODES)
    tail = levels[1:]
    tail[has_gap] = WORD
    tail[has_gap & sentence] = SENTENCE
    tail[line_breaks > 0] = LINE
    for k in np.flatnonzero(line_breaks > 1):
        if _BLANK_LINE.search(text, int(gap_start[k]), int(gap_end[k])):
            tail[k] = PARAGRAPH
    for k in np.flatnonzero(line_breaks > 0):
        if _HEADING.match(text, int(gap_end[k])):
            tail[k] = HEADING
    if first:
        levels[0] = HEADING if _HEADING.match(text, int(starts[0])) else PARAGRAPH
    return levels
