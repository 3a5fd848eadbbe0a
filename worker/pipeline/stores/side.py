"""The side store: a target's vectors in a side table keyed like its table (watch(..., store =>
'side'), sql/56_side.sql). The worker never writes the application's rows: no new row version
per vector, no serialization failure of the application's REPEATABLE READ or SERIALIZABLE
transactions, none of its UPDATE triggers fired.

Written as the row store writes (the same generated function names: an upsert of the side row
after the md5 check, blank content deleting it), except that an upsert takes no lock of the
application's row before it writes: the rows' advisory locks order two writers of one row from
the check to COMMIT. Rows deleted from the table leave their side rows behind until `forget`.
"""

from __future__ import annotations

from typing import ClassVar

from worker import db, queries
from worker.pipeline.batch import Row, RowState
from worker.pipeline.stores.row import RowStore
from worker.pipeline.targets import Target


class SideStore(RowStore):
    follows_deletes: ClassVar[bool] = True

    def write(
        self, conn: db.Connection, target: Target, embedded: list[Row], blank: list[Row]
    ) -> dict[str, RowState]:
        if embedded or blank:
            lock_rows(conn, target, embedded + blank)
        return super().write(conn, target, embedded, blank)

    def forget(self, conn: db.Connection, target: Target, gone: list[Row]) -> None:
        forget_rows(conn, target, gone)


def lock_rows(conn: db.Connection, target: Target, rows: list[Row]) -> None:
    """The rows' advisory locks (per target and key), until COMMIT."""
    conn.execute(
        queries.compose("lock_documents"), {"target_id": target.id, "keys": [r.key for r in rows]}
    )


def forget_rows(conn: db.Connection, target: Target, gone: list[Row]) -> None:
    """Deletes what rows gone from the table left in a side or chunk table (the target's
    embeddings_<id>_forget(): a row of that key inserted since keeps its own)."""
    if not gone:
        return
    lock_rows(conn, target, gone)
    conn.execute(target.query("forget_rows"), target.key_params([r.key for r in gone]))
