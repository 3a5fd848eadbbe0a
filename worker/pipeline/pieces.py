"""Long documents of chunked targets: embedded and committed a piece at a time.

A document is read (tokenized, split) only as far as the batch needs: a batch embeds at most
`piece_tokens` (EMBED_PIECE_TOKENS) tokens of new chunks. A document that does not fit whole
goes through several batches:

  * each batch takes its next piece of chunks, embeds the new ones and writes them in its write
    transaction through the target's chunk write (sql/32_access.sql), under the same stale-write
    guard as any document: nothing is written unless the content's md5 is still the one loaded.
    The same transaction records in `embeddings.documents` how far the document's committed
    chunks go (chunks 0 .. done - 1 of the content `digest`), and sends the document's key back
    to its queue, behind whatever arrived meanwhile: the application's writes are served
    between two pieces (their lane is read first: worker/pipeline/lanes.py);
  * the last piece writes its chunks, deletes those past the document's end, and forgets the
    record: only then does the document hold exactly its content's chunks, and only then is
    its job done.

Between batches the worker keeps the document's chunk stream (and the vectors of a piece not
yet known to have committed) in a small cache, so that a 10 MB document is tokenized once, not
once per piece, nor sent again by the database for each piece (the load asks for a row's
content only where its md5 is no longer the cached document's). Whatever the cache says, the
record decides: a piece is written only when the record says the document's chunks go exactly
up to where the piece starts (else someone else wrote the document since, and it starts over),
and a worker without the cache (restarted after a kill) continues from the record: a kill
loses at most the piece in flight.

Every job of the document continues from the record of its content, not only the one a piece
sent back: a second job (watch() again, a model change, an edit and its revert) must not
start the document over and lower the record under the chain in progress, which would then
find the record moved and start over in turn, on and on. The message a piece sends back says
where its chain left the record (`chunks_done`); a chain that finds the record of the same
content moved on from there, or gone, was taken over (by the job that moved it, whose own
message went back with that write) and ends (worker/pipeline/chunks/reading.py). A row goes
back once per batch however many of its jobs the batch held.

A document longer than `max_document_bytes` (EMBED_MAX_DOCUMENT_BYTES) is not embedded: it fails
at once, into embeddings.failures, and `embeddings.documents` marks it `over_ceiling` for
status and doctor.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from worker.pipeline.chunking import Chunk, ChunkSource
from worker.pipeline.parsing.budgets import Budgets

if TYPE_CHECKING:
    from worker.config import Settings

FloatVector = npt.NDArray[np.float32]
DocumentId = tuple[str, int, int, str, str]  # database, target id and version, key, content md5

# A piece reads (tokenizes) at most this many pieces' worth of tokens: a worker that continues
# a document after a restart skips its committed chunks a bounded stretch per batch.
SCAN_FACTOR = 16
# Documents kept between their pieces, per process (the least recently used go first).
CACHED_DOCUMENTS = 4
# Per batch at most this many chunks are written (one call of the chunk write): a write
# transaction of a few seconds at most (HNSW inserts dominate).
MAX_CHUNKS = 4_096


@dataclass(frozen=True)
class Limits:
    """What a batch may take (from Settings): of long documents, and of the time of a table
    owner's code (worker/pipeline/bounds.py)."""

    piece_tokens: int = 4096
    max_document_bytes: int = 16_777_216  # 0: no ceiling
    parsing: Budgets = field(default_factory=Budgets)  # of each document's parse
    owner_code_seconds: float = 1.0

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            piece_tokens=settings.piece_tokens,
            max_document_bytes=settings.max_document_bytes,
            parsing=settings.group(Budgets, "parse_"),
            owner_code_seconds=settings.owner_code_timeout_seconds,
        )


@dataclass
class DocumentChunks:
    """The chunks of a document a batch writes: all of them, or one piece (`first_seq` on, not
    `final`), with a vector for each once embedded or found stored."""

    chunks: list[Chunk]
    hashes: list[str]
    vectors: list[FloatVector | None] = field(default_factory=list)
    first_seq: int = 0
    final: bool = True  # the document's last chunk is among these
    document: Document | None = None  # the long document these are a piece of

    @property
    def new(self) -> list[int]:
        """Indexes of the chunks that still need embedding."""
        return [i for i, v in enumerate(self.vectors) if v is None]

    @property
    def whole(self) -> bool:
        return self.first_seq == 0 and self.final

    @property
    def end(self) -> int:
        """The chunks up to here are the document's once these are written."""
        return self.first_seq + len(self.chunks)


class Document:
    """A document being read a piece at a time: its chunk stream, how far its chunks are known to
    be committed (`done`), and the chunks taken since (`pending`: the piece in flight, or one
    whose commit is not confirmed yet), with their vectors."""

    def __init__(
        self,
        stream: ChunkSource,
        model: str,
        size: int,
        done: int = 0,
        cache_key: DocumentId | None = None,
    ) -> None:
        self.stream = stream
        self.cache_key = cache_key
        self.model = model
        self.bytes = size
        self.done = done  # chunks 0 .. done - 1 are committed (the stream skips them)
        self.pending = DocumentChunks([], [], [], first_seq=done, final=False, document=self)
        self.complete = False  # the stream is exhausted: the pending chunks end the document
        self.started = time.monotonic()

    def take(self, max_chunks: int, max_scan: int) -> list[int]:
        """Reads up to `max_chunks` more chunks into `pending` (skipping committed ones, reading at
        most `max_scan` tokens); returns their indexes in `pending`."""
        taken: list[int] = []
        scanned = 0
        while not self.complete and len(taken) < max_chunks and scanned < max_scan:
            chunk = next(self.stream, None)
            if chunk is None:
                self.complete = True
                break
            scanned += chunk.tokens
            if chunk.seq < self.done:
                continue  # committed before a restart: skipped, not written again
            pending = self.pending
            taken.append(len(pending.chunks))
            pending.chunks.append(chunk)
            pending.hashes.append(chunk.digest(self.model))
            pending.vectors.append(None)
        self.pending.final = self.complete
        return taken

    def confirm(self, committed: int) -> bool:
        """Takes the committed progress the database records (0 without a record); drops the
        pending chunks it covers. False when it does not fit what this document took: another
        writer wrote the document since, and it must start over from the record."""
        taken = self.done + len(self.pending.chunks)
        if committed == self.done:
            return True
        if self.done < committed <= taken:
            k = committed - self.done
            old = self.pending
            self.pending = DocumentChunks(
                old.chunks[k:],
                old.hashes[k:],
                old.vectors[k:],
                first_seq=committed,
                final=old.final,
                document=self,
            )
            self.done = committed
            return True
        return False

    def estimated(self) -> int:
        """The document's chunks, estimated from those read so far and the share of the text
        they cover (exact once the stream is exhausted)."""
        read = self.done + len(self.pending.chunks)
        if self.complete or self.stream.position <= 0:
            return read
        produced = self.stream.produced
        return max(read, round(produced * len(self.stream.text) / self.stream.position))


class Cache:
    """Documents between their pieces: taken out by the batch that works on one (no two batches
    share a Document) and put back once its piece was handed to the write. Thread-safe."""

    def __init__(self, size: int = CACHED_DOCUMENTS) -> None:
        self._size = size
        self._documents: OrderedDict[DocumentId, Document] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: DocumentId) -> Document | None:
        with self._lock:
            return self._documents.pop(key, None)

    def holds(self, key: DocumentId) -> bool:
        with self._lock:
            return key in self._documents

    def known(
        self, database: str, target_id: int, version: int, keys: list[str]
    ) -> dict[str, Known]:
        """The cached documents of these rows (of this database and definition), by row key: the
        load stage asks the database to send a row's content only where its md5 is no longer
        the cached one's (worker/pipeline/stages.py)."""
        wanted = set(keys)
        with self._lock:
            return {
                key[3]: Known(key[4], document.stream.content)
                for key, document in self._documents.items()
                if key[:3] == (database, target_id, version) and key[3] in wanted
            }

    def put(self, key: DocumentId, document: Document) -> None:
        with self._lock:
            self._documents[key] = document
            self._documents.move_to_end(key)
            while len(self._documents) > self._size:
                self._documents.popitem(last=False)


CACHE = Cache()


@dataclass(frozen=True)
class Known:
    """A cached document's content and its md5."""

    digest: str
    text: str


def database_of(conn: Any) -> str:
    info = conn.info
    return f"{info.host}:{info.port}/{info.dbname}"


def document_id(conn: Any, target_id: int, version: int, key: str, digest: str) -> DocumentId:
    """A document's cache key: the same database, definition, row and content."""
    return (database_of(conn), target_id, version, key, digest)
