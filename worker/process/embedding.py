"""The embedder thread of a worker: the model run on each batch the fetcher loaded, passed on
to the writer."""

from __future__ import annotations

import threading

from worker.models import priority
from worker.models.loaded import LoadedModels
from worker.pipeline import stages
from worker.process.handoffs import Handoffs, pass_on


def embed_batches(
    loaded: Handoffs,
    embedded: Handoffs,
    embedders: LoadedModels,
    *,
    stopping: threading.Event,
    finished: threading.Event,
    nice: int = 0,
) -> None:
    """The embedder thread: runs the model on each batch the fetcher loaded and passes it on to
    the writer; a batch not started once the worker is stopping is handed back instead. Its
    inference calls yield to questions answered in this process; with `nice`, the thread and
    its models' inference threads also run at that lower priority (worker/models/priority.py)."""
    priority.lower(nice)
    try:
        while True:
            item = loaded.get()
            if item is None:
                return
            if stopping.is_set():
                item.release = True  # not started: hand it back rather than keep it
            if not item.release:
                stages.embed(embedders, item.batch)
            pass_on(embedded, item, finished)
    finally:
        embedded.put(None)
