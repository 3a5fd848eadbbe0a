"""The row store: a target's vectors in a column of its own table (the default).

The vector write is an UPDATE of the row that checks the content's md5 in the same statement
(the stale-write guard). The rows are locked first, as the UPDATE would lock them, which orders
two writers of one row until COMMIT; a row another transaction holds (an application's open
transaction) is skipped rather than waited for, and waits for a later batch (BLOCKED). During
a model change (sql/44_changes.sql) the new model's vectors go into the shadow column too, under
the same guard.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from pgvector import HalfVector, Vector

from worker import db
from worker.pipeline import shadow
from worker.pipeline.batch import Row, RowState
from worker.pipeline.stores.base import Store
from worker.target import Target


class RowStore(Store):
    # With the target's model, and during a model change with the new one too.
    embed = staticmethod(shadow.embed)

    def write(
        self, conn: db.Connection, target: Target, embedded: list[Row], blank: list[Row]
    ) -> dict[str, RowState]:
        held = self.lock(conn, target, embedded + blank)
        states = {r.key: RowState.BLOCKED for r in embedded + blank if r.key in held}
        embedded = [r for r in embedded if r.key not in held]
        blank = [r for r in blank if r.key not in held]
        # A target being changed to another model gets the new model's vectors in its shadow
        # column too, under the same stale-write guard: the lock ordered the rows' writers (their
        # row locks, or a side table's documents_written), so both columns hold vectors of the
        # same content. Shadow-only rows (the change's own jobs) keep their current vector.
        full = [r for r in embedded if not r.shadow_only]
        if full:
            written = _write(conn, target, full, shadow=False)
            for row in full:
                states[row.key] = RowState.WRITTEN if row.key in written else RowState.STALE
            if target.in_change:
                _write_shadow(conn, target, [r for r in full if r.key in written])
        shadow_only = [r for r in embedded if r.shadow_only]
        if shadow_only:
            written = _write(conn, target, shadow_only, shadow=True)
            for row in shadow_only:
                states[row.key] = RowState.WRITTEN if row.key in written else RowState.STALE
        if blank:
            cleared = _clear(conn, target, blank, shadow=False)
            if target.in_change:
                cleared |= _clear(conn, target, blank, shadow=True)
            for row in blank:
                # Not cleared: already NULL, or the content changed since (its own job does it).
                states[row.key] = RowState.CLEARED if row.key in cleared else RowState.BLANK
        return states

    def lock(self, conn: db.Connection, target: Target, rows: list[Row]) -> set[str]:
        """Locks the rows about to be written until COMMIT (the target's _lock_rows(), as the
        table's owner); returns the keys of those another transaction holds, not locked."""
        if not rows:
            return set()
        found = conn.execute(target.query("lock_rows"), target.key_params([r.key for r in rows]))
        return {key for (key,) in found}


def _write(conn: db.Connection, target: Target, rows: list[Row], *, shadow: bool) -> set[str]:
    """Stores the rows' vectors (`shadow`: their new-model vectors, in the shadow column);
    returns the keys written."""
    if not rows:
        return set()
    wrap = HalfVector if shadow or target.embedding_type == "halfvec" else Vector
    vectors = [_shadow_vector(r) if shadow else _vector(r) for r in rows]
    return {
        key
        for (key,) in conn.execute(
            target.query("write_vectors", shadow=shadow),
            {
                **target.key_params([r.key for r in rows]),
                "embeddings": [wrap(v) for v in vectors],
                "hashes": [r.digest for r in rows],
            },
        )
    }


def _write_shadow(conn: db.Connection, target: Target, rows: list[Row]) -> None:
    """The new-model vectors of rows just written with the target's model. Rows without one
    (the new model could not be loaded) have their shadow vector cleared: one of their older
    content must not be swapped in; the change queues them again before it completes."""
    _write(conn, target, [r for r in rows if r.shadow_vector is not None], shadow=True)
    _clear(conn, target, [r for r in rows if r.shadow_vector is None], shadow=True)


def _clear(conn: db.Connection, target: Target, rows: list[Row], *, shadow: bool) -> set[str]:
    if not rows:
        return set()
    return {
        key
        for (key,) in conn.execute(
            target.query("clear_vectors", shadow=shadow),
            {**target.key_params([r.key for r in rows]), "hashes": [r.digest for r in rows]},
        )
    }


def _vector(row: Row) -> npt.NDArray[np.float32]:
    assert row.vector is not None, "only embedded rows are stored"
    return row.vector


def _shadow_vector(row: Row) -> npt.NDArray[np.float32]:
    assert row.shadow_vector is not None, "rows of a target in a change have both vectors"
    return row.shadow_vector
