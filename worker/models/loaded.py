"""The models this process has loaded: each once, shared by every target that uses it.

A registry model that is not on disk is downloaded on first use (`download.ensure`). Loading can
fail (downloads off, hub unreachable, corrupt file). The failure is remembered and the load
retried after `retry_after` seconds, so a worker started before the model arrived recovers by
itself, without hammering the disk or the hub meanwhile. A model being loaded or downloaded
holds only its own lock: models already loaded keep serving.

Where models are found and whether they may be downloaded is given at construction (from the
Settings: `location=settings.model_location, downloads=settings.downloads`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from worker import exceptions, metrics
from worker.models import download, files, onnx
from worker.models.catalog import Variant
from worker.models.embedder import Embedder

logger = logging.getLogger(__name__)

MAX_REMEMBERED_FAILURES = 32  # bounded: the names asked for are not ours to bound


@dataclass(frozen=True)
class LoadFailure:
    error: str
    at: float


class LoadedModels:
    def __init__(
        self,
        *,
        location: files.ModelLocation,
        downloads: download.DownloadPolicy,
        variant: Variant = "fp32",
        threads: int | None = None,
        retry_after: float = 30.0,
    ):
        self.location = location
        self.downloads = downloads
        self.variant = variant
        self.threads = threads
        self.retry_after = retry_after
        self._loaded: dict[str, Embedder] = {}
        self._tokenizers: dict[str, Any] = {}
        self._failed: OrderedDict[str, LoadFailure] = OrderedDict()
        self._lock = threading.Lock()  # guards the dictionaries
        self._loading: dict[str, threading.Lock] = {}  # one per model, held while loading

    def get(self, model: str) -> Embedder:
        """The loaded model, loading (or downloading) it on first use; raises ModelError when
        unavailable."""
        with self._lock:
            if model in self._loaded:
                return self._loaded[model]
            loading = self._loading.setdefault(model, threading.Lock())
        with loading:
            with self._lock:
                if model in self._loaded:  # another thread loaded it while we waited
                    return self._loaded[model]
                failure = self._failed.get(model)
                if failure and time.monotonic() - failure.at < self.retry_after:
                    raise exceptions.ModelError(failure.error)
            embedder = self._load(model)
            with self._lock:
                self._failed.pop(model, None)
                self._loaded[model] = embedder
            metrics.model_loaded(model)
            return embedder

    def failures(self) -> dict[str, str]:
        """Models that failed to load recently, with why."""
        with self._lock:
            return {name: failure.error for name, failure in self._failed.items()}

    def _load(self, model: str) -> Embedder:
        started = time.monotonic()
        try:
            directory = download.ensure(
                model, variant=self.variant, location=self.location, policy=self.downloads
            )
            embedder = Embedder.load(
                directory, variant=self.variant, threads=self.threads, location=self.location
            )
        except exceptions.ModelError as exc:
            self._remember(model, str(exc))
            metrics.model_load_failed(model)
            logger.error("model %s unavailable: %s", model, exc)
            raise
        except Exception as exc:  # a corrupt file surfaces as onnxruntime's own errors
            message = f"model {model!r} failed to load: {exc}"
            self._remember(model, message)
            metrics.model_load_failed(model)
            logger.error("%s", message)
            raise exceptions.ModelError(message) from exc
        logger.info(
            "model %s loaded (%s, %d dimensions, %d max tokens) in %.1f s",
            model,
            self.variant,
            embedder.dim,
            embedder.max_tokens,
            time.monotonic() - started,
        )
        return embedder

    def _remember(self, model: str, error: str) -> None:
        with self._lock:
            self._failed[model] = LoadFailure(error, time.monotonic())
            self._failed.move_to_end(model)
            while len(self._failed) > MAX_REMEMBERED_FAILURES:
                self._failed.popitem(last=False)

    def loaded(self) -> dict[str, Embedder]:
        with self._lock:
            return dict(self._loaded)

    def tokenizer(self, model: str) -> Any:
        """`model`'s tokenizer without truncation (the chunk splitter counts whole documents),
        read once from its directory on disk; never loads weights, never downloads. Raises
        ModelError when the model is not on disk."""
        with self._lock:
            found = self._tokenizers.get(model)
        if found is None:
            info = files.ModelDir.read(self.location.locate(model), name=model)
            found = onnx.load_tokenizer(info.tokenizer_file, max_tokens=None)
            with self._lock:
                found = self._tokenizers.setdefault(model, found)
        return found
