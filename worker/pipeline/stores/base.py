"""The interface every kind of store implements (see __init__.py for the kinds)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

from worker import db
from worker.pipeline.batch import Batch, Row, RowState
from worker.target import Target

if TYPE_CHECKING:
    from worker.models.loaded import LoadedModels


class Store(ABC):
    """A kind of store of a target's vectors. Stateless: one instance serves every target of its
    kind, which each call names."""

    # Whether rows deleted from the table leave something behind to delete: their jobs' rows come
    # to `forget` (the table's delete and truncate triggers queue them, sql/56_side.sql).
    follows_deletes: ClassVar[bool] = False

    def prepare(
        self,
        conn: db.Connection,
        batch: Batch,
        target: Target,
        rows: list[Row],
        models: LoadedModels,
    ) -> None:
        """Load stage, after the content of `rows` (READY) is loaded: anything the embed stage
        needs beyond the content. A problem defers the target (batch.deferred). Nothing, unless
        a store needs it."""
        return

    @abstractmethod
    def embed(
        self,
        embedders: LoadedModels,
        batch: Batch,
        target: Target,
        rows: list[Row],
    ) -> int | None:
        """Embed stage: embeds `rows` (READY) and makes them EMBEDDED (or FAILED, POSTPONED);
        returns the tokens embedded, or None when the target is deferred (the reason in
        batch.deferred)."""

    @abstractmethod
    def write(
        self, conn: db.Connection, target: Target, embedded: list[Row], blank: list[Row]
    ) -> dict[str, RowState]:
        """Write stage, inside the batch's write transaction: stores the vectors of `embedded` and
        clears those of `blank`, for the rows whose content is still the one loaded. Returns each
        row's new state by key, leaving the rows untouched (the transaction may roll back)."""

    def drop(self, conn: db.Connection, target: Target, failed: list[Row]) -> dict[str, RowState]:
        """Write stage, inside the transaction that dead-letters them: what the store holds of
        rows that failed for good (`permanent`: a document that cannot be read) goes, where
        their content is still the one that failed. Returns the new state (by key) of those
        whose content changed since (STALE: not failed; their newer job reads it). Nothing,
        unless a store's rows can fail for good (only a chunk store's documents do)."""
        return {}

    def forget(self, conn: db.Connection, target: Target, gone: list[Row]) -> None:
        """Write stage: deletes what rows gone from the table left in the store (only called
        when `follows_deletes`). Their states stay GONE."""
        return
