"""The hand-offs between a worker's pipeline threads: a batch passed from the fetcher to the
embedder to the writer, one at a time (queues of one: each stage waits for the next)."""

from __future__ import annotations

import queue as stdqueue
import threading
from dataclasses import dataclass

from worker.pipeline.batch import Batch


@dataclass
class Handoff:
    batch: Batch
    release: bool = False  # hand the jobs back instead of writing


Handoffs = stdqueue.Queue[Handoff | None]  # None: no more batches


def pass_on(q: Handoffs, item: Handoff, finished: threading.Event) -> None:
    """Hands a batch to the next stage, waiting while it is busy (not once the pipeline ended)."""
    while True:
        try:
            q.put(item, timeout=0.2)
            return
        except stdqueue.Full:
            if finished.is_set():
                return
