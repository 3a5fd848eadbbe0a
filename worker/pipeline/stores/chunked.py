"""The chunk store: a chunked target's vectors in its chunk table, one per chunk of a document
(watch(..., chunk_tokens => N), sql/55_chunks.sql). Splitting, reuse of unchanged chunks'
vectors and the chunk write are worker/pipeline/chunks/'s (a module per stage); this is how the
pipeline reaches them. Rows deleted from the table leave their chunks behind until `forget` (the
chunk table has no foreign key to the table: one made TRUNCATE of the table fail)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from worker import db, exceptions
from worker.pipeline import provenance
from worker.pipeline.batch import Batch, Row, RowState
from worker.pipeline.chunks import embedding, reading, writing
from worker.pipeline.stores.base import EmbedRows, Store
from worker.pipeline.stores.side import forget_rows
from worker.target import Target

if TYPE_CHECKING:
    from worker.models.loaded import LoadedModels


class ChunkStore(Store):
    follows_deletes: ClassVar[bool] = True

    def prepare(
        self,
        conn: db.Connection,
        batch: Batch,
        target: Target,
        rows: list[Row],
        models: LoadedModels,
    ) -> None:
        reading.prepare(conn, batch, target, rows, models)

    def embed(
        self,
        embedders: LoadedModels,
        batch: Batch,
        target: Target,
        rows: list[Row],
        embed_rows: EmbedRows,
    ) -> int | None:
        # Only the chunks that changed, with the target's model (a chunked target's model change
        # is in place: docs/models.md).
        try:
            model = embedders.get(target.model)
        except exceptions.ModelError as exc:
            batch.deferred[target.id] = str(exc)
            return None
        problem = target.problem(model.dim)
        if problem:
            batch.deferred[target.id] = problem
            return None
        tokens = embedding.embed(model, rows)
        batch.producers[target.id] = (provenance.producer(model), None)
        return tokens

    def write(
        self, conn: db.Connection, target: Target, embedded: list[Row], blank: list[Row]
    ) -> dict[str, RowState]:
        return writing.store(conn, target, embedded, blank)

    def forget(self, conn: db.Connection, target: Target, gone: list[Row]) -> None:
        forget_rows(conn, target, gone)
        writing.forget(conn, target, gone)  # a long document's progress or ceiling
