"""The models this process has loaded: each once, shared by every target that uses it.

Loading can fail (model not downloaded, corrupt file). The failure is remembered and the load
retried after `retry_after` seconds, so a worker started before `embed-worker model download`
finished recovers by itself, without hammering the disk meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from worker import exceptions, metrics
from worker.embedder import Embedder
from worker.models import Variant

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadFailure:
    error: str
    at: float


class Embedders:
    def __init__(
        self, *, variant: Variant = "fp32", threads: int | None = None, retry_after: float = 30.0
    ):
        self.variant = variant
        self.threads = threads
        self.retry_after = retry_after
        self._loaded: dict[str, Embedder] = {}
        self._failed: dict[str, LoadFailure] = {}
        self._lock = threading.Lock()

    def get(self, model: str) -> Embedder:
        """The loaded model, loading it on first use; raises ModelError when unavailable."""
        with self._lock:
            if model in self._loaded:
                return self._loaded[model]
            failure = self._failed.get(model)
            if failure and time.monotonic() - failure.at < self.retry_after:
                raise exceptions.ModelError(failure.error)
            try:
                started = time.monotonic()
                embedder = Embedder.load(model, variant=self.variant, threads=self.threads)
            except exceptions.ModelError as exc:
                self._failed[model] = LoadFailure(str(exc), time.monotonic())
                metrics.model_load_failed(model)
                logger.error("model %s unavailable: %s", model, exc)
                raise
            except Exception as exc:  # a corrupt file surfaces as onnxruntime's own errors
                message = f"model {model!r} failed to load: {exc}"
                self._failed[model] = LoadFailure(message, time.monotonic())
                metrics.model_load_failed(model)
                logger.error("%s", message)
                raise exceptions.ModelError(message) from exc
            self._failed.pop(model, None)
            self._loaded[model] = embedder
            metrics.model_loaded(model)
            logger.info(
                "model %s loaded (%s, %d dimensions, %d max tokens) in %.1f s",
                model,
                self.variant,
                embedder.dim,
                embedder.max_tokens,
                time.monotonic() - started,
            )
            return embedder

    def loaded(self) -> dict[str, Embedder]:
        with self._lock:
            return dict(self._loaded)
