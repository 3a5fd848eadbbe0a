"""Where a target keeps its vectors: one strategy per kind of store, chosen from the target.

  row     (row.py)      a column of the watched table: the vector is an UPDATE of the row
                        (sql/55_row.sql)
  side    (side.py)     a side table keyed like the watched table (watch(..., store => 'side'),
                        sql/56_side.sql): the worker never writes the application's rows
  chunks  (chunked.py)  a chunk table, one vector per chunk of a document (chunk_tokens => N,
                        sql/55_chunks.sql)

The pipeline asks `of(target)` and calls the same methods whatever the kind (base.Store): the
load stage's `prepare`, the embed stage's `embed`, the write stage's `write` and `forget`
(search is embeddings.search(), sql/58_search.sql, with the caller's rights). Every store reads
and writes through the target's generated functions, which run as the table's owner
(sql/32_access.sql).
"""

from __future__ import annotations

from worker import exceptions
from worker.pipeline.stores.base import Store
from worker.pipeline.stores.chunked import ChunkStore
from worker.pipeline.stores.row import RowStore
from worker.pipeline.stores.side import SideStore
from worker.target import Target

# By embeddings.targets.store_kind: the SQL side of each kind is embeddings.<kind>_store_*, in a
# file of its own; sql/54_stores.sql lists the kinds (store_kinds()) and their operations.
_BY_KIND: dict[str, Store] = {"row": RowStore(), "side": SideStore(), "chunks": ChunkStore()}

__all__ = ["ChunkStore", "RowStore", "SideStore", "Store", "of"]


def of(target: Target) -> Store:
    """The store of `target`'s vectors. An unknown kind (from a schema newer than this worker) is
    an error, never another kind's writes."""
    store = _BY_KIND.get(target.store_kind)
    if store is None:
        raise exceptions.TargetError(
            f"{target.name}: store kind {target.store_kind!r} is not one this worker knows "
            f"({', '.join(sorted(_BY_KIND))}); upgrade the worker"
        )
    return store
