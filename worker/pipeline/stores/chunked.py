"""The chunk store: a chunked target's vectors in its chunk table, one per chunk of a document
(watch(..., chunk_tokens => N), sql/55_chunks.sql). Splitting, reuse of unchanged chunks'
vectors and the chunk write are worker/pipeline/chunks/'s (a module per stage); this is how the
pipeline reaches them. Rows deleted from the table leave their chunks behind until `forget` (the
chunk table has no foreign key to the table: one made TRUNCATE of the table fail)."""

from __future__ import annotations

from typing import ClassVar

from worker import db
from worker.pipeline.batch import Row
from worker.pipeline.chunks import embedding, reading, writing
from worker.pipeline.stores.base import Store
from worker.pipeline.stores.side import forget_rows
from worker.target import Target


class ChunkStore(Store):
    follows_deletes: ClassVar[bool] = True

    prepare = staticmethod(reading.prepare)
    embed = staticmethod(embedding.embed_target)
    write = staticmethod(writing.store)
    drop = staticmethod(writing.drop)  # a document that cannot be read: its old chunks go

    def forget(self, conn: db.Connection, target: Target, gone: list[Row]) -> None:
        forget_rows(conn, target, gone)
        writing.forget(conn, target, gone)  # a long document's progress or ceiling
