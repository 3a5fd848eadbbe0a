"""The model alone: onnxruntime `Session.run` over the same texts, already tokenized, padded and
batched exactly as the embedder batches them, so only inference is timed. The end-to-end
drain divided by this is how close the whole worker gets to the model's own speed."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from worker.models.batching import batches, pad_batch
from worker.models.embedder import Embedder


def run(
    model_dir: Path, texts: list[str], *, variant: str = "fp32", threads: int = 2, repeats: int = 3
) -> dict[str, Any]:
    embedder = Embedder.load(model_dir, variant=variant, threads=threads)  # type: ignore[arg-type]
    feeds = []
    for batch in batches(embedder._encode(texts), embedder.token_budget):
        ids, mask, type_ids = pad_batch(batch, embedder._pad_id)
        arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": type_ids}
        feeds.append({name: arrays[name].astype(np.int64) for name in embedder._inputs})
    session, output = embedder._lane_session(), embedder._output
    session.run([output], feeds[0])  # warm up
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        for feed in feeds:
            session.run([output], feed)
        seconds.append(time.perf_counter() - started)
    median = statistics.median(seconds)
    return {
        "variant": variant,
        "threads": threads,
        "texts": len(texts),
        "calls": len(feeds),
        "docs_per_s": round(len(texts) / median, 1),
        "seconds": [round(s, 3) for s in seconds],
    }
