"""A batch through every stage, in order, on one connection: read's prepare, load, embed,
write (with its settlement) and the batch's log line. Push mode runs it for the jobs a request
names (worker/http/push.py). The pulled path runs the same stage functions on three threads,
handing the batch on between them (worker/process/: fetcher, embedding, writer), so that
loading, embedding and writing overlap; what each stage does is written once, in stages.py and
write.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker import db
from worker.pipeline import stages, write
from worker.pipeline.batch import Batch
from worker.pipeline.settlement import Settlement

if TYPE_CHECKING:
    from worker.config import Settings
    from worker.models.loaded import LoadedModels
    from worker.pipeline.jobs import Queue


def process(
    conn: db.Connection,
    queue: Queue,
    batch: Batch,
    embedders: LoadedModels,
    settings: Settings,
) -> Settlement:
    """Embeds and stores `batch`'s rows and settles its jobs in `queue`, as the pulled path
    would; returns the settlement (which jobs were deleted, retried, released)."""
    stages.prepare(batch)
    stages.load(conn, batch, embedders)
    stages.embed(embedders, batch)
    settlement = write.write(conn, queue, batch, settings)
    stages.log_batch(batch)
    return settlement
