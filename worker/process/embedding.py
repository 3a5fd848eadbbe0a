"""The embedder thread of a worker: the model run on each batch the fetcher loaded, passed on
to the writer."""

from __future__ import annotations

import threading

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
) -> None:
    """The embedder thread: runs the model on each batch the fetcher loaded and passes it on to
    the writer; a batch not started once the worker is stopping is handed back instead."""
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
