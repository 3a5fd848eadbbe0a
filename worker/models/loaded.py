"""The models this process has loaded: each once, shared by every target that uses it.

A registry model that is not on disk is downloaded on first use, on a thread of its own
(`download.plan`, then `download.download`), and loaded there once it is in. Meanwhile get()
waits for it, or, in a worker that serves other models (`serve_while_downloading`), raises
`ModelDownloading` at once: the model's targets are held with that reason while the others are
served. A stop (the worker's) ends the download: the wait for another process's download of it,
or the transfer at its next chunk; what it left in the cache is swept by the next download.
Only the process's own work starts a download (its start, its batches, its keeper retrying
the default model); a request (POST /embed, POST /search, /readyz: `get(..., download=False)`)
never does: it is answered at once that the model is not downloaded, or downloading, and why.
Loading can fail (downloads off, hub unreachable, corrupt file). The failure is remembered and
the load retried after `retry_after` seconds, so a worker started before the model arrived
recovers by itself, without hammering the disk or the hub meanwhile. A model being loaded
holds only its own lock: models already loaded keep serving.

Where models are found and whether they may be downloaded is given at construction (from the
Settings: `location=settings.model_location, downloads=settings.downloads`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from worker import escapes, exceptions, metrics
from worker.models import download, files, hub, onnx
from worker.models.catalog import REGISTRY, ModelSpec, Variant
from worker.models.embedder import Embedder
from worker.models.remote import keys
from worker.models.remote.client import RemoteModel
from worker.models.remote.keys import ApiKey
from worker.models.remote.spec import RemoteSpec
from worker.models.remote.tokens import EstimatedTokens, ExactTokens, TokenCounter

Model = Embedder | RemoteModel  # what get() gives: a local model, or a remote one


logger = logging.getLogger(__name__)

T = TypeVar("T")
MAX_REMEMBERED_FAILURES = 32  # bounded: the names asked for are not ours to bound


@dataclass(frozen=True)
class LoadFailure:
    error: str
    at: float


@dataclass
class Download:
    """A registry model being downloaded, then loaded, on a thread of its own."""

    model: str
    source: str  # what is fetched and where to: for messages
    started: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    failure: BaseException | None = None  # why it ended without a model (once done)

    def reason(self) -> str:
        return (
            f"downloading {self.source} (for {time.monotonic() - self.started:.0f} s); "
            "its tables' jobs are held until it loads"
        )


class LoadedModels:
    def __init__(
        self,
        *,
        location: files.ModelLocation,
        downloads: download.DownloadPolicy,
        api_key: ApiKey,  # remote models' keys: Settings.api_key (worker/config.py)
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
        self._downloads: dict[str, Download] = {}  # in progress
        # Set by a worker (serve_while_downloading): its stop ends downloads, and get() does not
        # wait for one when it serves other models meanwhile.
        self._stopping = threading.Event()
        self._wait_for_downloads = True
        # Told of each download as it starts (a command says it on stderr: its logs are quiet).
        self.on_download: Callable[[str], None] | None = None
        # Remote models (worker/models/remote/): their registrations as the worker last read
        # them (follow()), and the RemoteModel built from each.
        self.api_key: ApiKey = api_key
        self._remote_specs: Callable[[], dict[str, RemoteSpec]] = dict
        self._refused_remote: Callable[[], dict[str, str]] = dict
        self._remote: dict[str, RemoteModel] = {}
        self._plain_http = keys.PlainHttpRefusals()  # each logged once

    def follow(
        self,
        remote_specs: Callable[[], dict[str, RemoteSpec]],
        refused: Callable[[], dict[str, str]] = dict,
    ) -> None:
        """Where the registry's remote models are read from (TargetRegistry.remote_models), and
        those it cannot serve with why (refused_remote_models)."""
        self._remote_specs = remote_specs
        self._refused_remote = refused

    def serve_while_downloading(self, stopping: threading.Event, *, wait: bool) -> None:
        """A worker's models: `stopping` ends their downloads (and the waits for them), and
        unless `wait` (a one-shot run, which waits to embed every row) get() raises
        ModelDownloading while a model downloads instead of waiting for it."""
        self._stopping = stopping
        self._wait_for_downloads = wait

    def remote_spec(self, model: str) -> RemoteSpec | None:
        return self._remote_specs().get(model)

    def get(self, model: str, *, download: bool = True) -> Model:
        """The loaded model, loading (or downloading) it on first use; raises ModelError when
        unavailable. A remote model is built from its registration (no weights to load).
        `download`=False (a request's): a model on disk is loaded, but one that is not is never
        fetched, nor waited for: ModelNotDownloaded, or ModelDownloading while a download of the
        process's own runs, at once."""
        spec = self.remote_spec(model)
        if spec is not None:
            return self._remote_model(spec)
        why = self._refused_remote().get(model)
        if why is not None:  # registered, of a kind this worker does not know: its rows wait
            raise exceptions.ProviderRefused(f"remote model {model} is not served: {why}")
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
                pending = self._downloads.get(model)
            if pending is None:
                started = time.monotonic()
                found = self._loads(model, lambda: self._plan(model))
                if isinstance(found, Path):
                    loaded = self._loads(model, lambda: self._embedder(model, found))
                    return self._keep(model, loaded, started)
                if not download:
                    raise self._not_downloaded(model, failure)
                pending = self._start_download(model, found)
        if not download:
            raise exceptions.ModelDownloading(pending.reason())
        return self._await(pending)

    def _not_downloaded(
        self, model: str, failure: LoadFailure | None
    ) -> exceptions.ModelNotDownloaded:
        why = f": its last download failed ({failure.error})" if failure else ""
        return exceptions.ModelNotDownloaded(
            f"model {model} is not downloaded on this machine{why}; requests never start a"
            " download: the worker fetches it itself (at start, for its tables, and retrying"
            f" its default model), or `embed-worker model download {model}` does"
        )

    def _await(self, pending: Download) -> Embedder:
        """The model `pending` downloads, once loaded; ModelDownloading at once when this
        process serves other models meanwhile; ModelError when it failed or was stopped."""
        if not self._wait_for_downloads:
            raise exceptions.ModelDownloading(pending.reason())
        while not pending.done.wait(0.2):
            if self._stopping.is_set():
                raise exceptions.ModelError(f"model {pending.model}: stopped while downloading")
        if pending.failure is not None:
            raise pending.failure
        with self._lock:
            return self._loaded[pending.model]

    def downloading(self) -> dict[str, str]:
        """Models being downloaded, with the reason their targets wait."""
        with self._lock:
            pending = list(self._downloads.values())
        return {d.model: f"model {d.model}: {d.reason()}" for d in pending}

    def failures(self) -> dict[str, str]:
        """Models that failed to load recently, with why."""
        with self._lock:
            return {name: failure.error for name, failure in self._failed.items()}

    def _plan(self, model: str) -> Path | ModelSpec:
        return download.plan(
            model, variant=self.variant, location=self.location, policy=self.downloads
        )

    def _embedder(self, model: str, directory: Path) -> Embedder:
        try:
            return Embedder.load(
                directory, variant=self.variant, threads=self.threads, location=self.location
            )
        except Exception as exc:
            if directory != self.location.cache / model or model not in REGISTRY:
                raise
            # A damaged download (a truncated model.onnx: INVALID_PROTOBUF): say what repairs it.
            said = str(exc) if isinstance(exc, exceptions.ModelError) else f"{exc}"
            raise exceptions.ModelError(
                f"model {model!r} failed to load: {said}; `embed-worker model download {model}`"
                " checks the downloaded files and fetches the damaged ones again"
            ) from exc

    def _keep(self, model: str, embedder: Embedder, started: float) -> Embedder:
        with self._lock:
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

    def _start_download(self, model: str, spec: ModelSpec) -> Download:
        """Downloads `spec` on a daemon thread, then loads it: a stopping process does not wait
        for it (its staging directory is swept by the next download of the model)."""
        pending = Download(model, f"{spec.repo_id}@{spec.revision[:12]} into {self.location.cache}")
        with self._lock:
            self._downloads[model] = pending
        if self.on_download is not None:
            self.on_download(f"model {model} is not on this machine: downloading {pending.source}")
        thread = threading.Thread(
            target=self._download, args=(pending, spec), name=f"download {model}", daemon=True
        )
        thread.start()
        return pending

    def _download(self, pending: Download, spec: ModelSpec) -> None:
        model = pending.model
        try:
            directory = self._loads(
                model,
                lambda: download.download(
                    spec.name,
                    variant=self.variant,
                    location=self.location,
                    endpoint=self.downloads.endpoint,
                    stop=self._stopping,
                ),
            )
            loaded = self._loads(model, lambda: self._embedder(model, directory))
            self._keep(model, loaded, pending.started)  # (the time said: download included)
        except BaseException as exc:
            pending.failure = exc
        finally:
            with self._lock:
                self._downloads.pop(model, None)
            pending.done.set()

    def _loads(self, model: str, step: Callable[[], T]) -> T:
        """`step` of loading `model`; its failure remembered (retried after `retry_after`),
        logged once and raised as a ModelError."""
        try:
            return step()
        except exceptions.ModelError as exc:
            failed = exc
        except Exception as exc:  # a corrupt file surfaces as onnxruntime's own errors
            failed = exceptions.ModelError(f"model {model!r} failed to load: {exc}")
            failed.__cause__ = exc
        if isinstance(failed, hub.Stopped) and self._stopping.is_set():
            logger.info("model %s: download stopped (the worker is stopping)", model)
            raise failed
        self._remember(model, str(failed))
        metrics.model_load_failed(model)
        logger.error("model %s unavailable: %s", model, failed)
        failed.logged = True
        raise failed

    def forget_unused(self, in_use: set[str]) -> None:
        """Forgets the failed loads of models not `in_use` (no longer the default nor any
        target's model): their load gauge leaves /metrics, and nothing reports them as failing.
        A model still in use keeps its failure, retried as before."""
        with self._lock:
            unused = [name for name in self._failed if name not in in_use]
            for name in unused:
                del self._failed[name]
        for name in unused:
            metrics.model_unused(name)

    def _remember(self, model: str, error: str) -> None:
        with self._lock:
            self._failed[model] = LoadFailure(error, time.monotonic())
            self._failed.move_to_end(model)
            while len(self._failed) > MAX_REMEMBERED_FAILURES:
                self._failed.popitem(last=False)

    def loaded(self) -> dict[str, Model]:
        with self._lock:
            return {**self._loaded, **self._remote}

    def tokenizer(self, model: str) -> Any:
        """`model`'s tokenizer without truncation (the chunk splitter counts whole documents),
        read once from its directory on disk; never loads weights, never downloads. Raises
        ModelError when the model is not on disk. A remote model's is the one its registration
        names (`tokenizer`); without one it has none to split by."""
        spec = self.remote_spec(model)
        if spec is not None:
            if spec.tokenizer is None:
                raise exceptions.ModelError(
                    f"remote model {model} names no tokenizer, which a chunked target needs to "
                    f"split by: SELECT embeddings.register_model({escapes.shown_literal(model)}, "
                    "..., tokenizer => '<a local model or tokenizer.json>')"
                )
            return self._tokenizer_file(spec.tokenizer)
        with self._lock:
            found = self._tokenizers.get(model)
        if found is None:
            info = files.ModelDir.read(self.location.locate(model), name=model)
            found = onnx.load_tokenizer(info.tokenizer_file, max_tokens=None)
            with self._lock:
                found = self._tokenizers.setdefault(model, found)
        return found

    # --- remote models --------------------------------------------------------------------------
    def _remote_model(self, spec: RemoteSpec) -> RemoteModel:
        """The RemoteModel of `spec`, rebuilt when the registration changed (a new endpoint,
        limits or price take effect at the worker's next registry read)."""
        # (a registration from before register_model() refused plain http beyond loopback)
        self._plain_http.check(spec, f"remote model {spec.name}")
        with self._lock:
            found = self._remote.get(spec.name)
        if found is not None and found.spec == spec:
            return found
        counter: TokenCounter = EstimatedTokens()
        if spec.tokenizer is not None:
            try:
                counter = ExactTokens(self._tokenizer_file(spec.tokenizer))
            except exceptions.ModelError as exc:
                raise exceptions.ModelError(
                    f"remote model {spec.name}: its tokenizer {spec.tokenizer!r}: {exc}"
                ) from None
        model = RemoteModel(spec, api_key=self.api_key, counter=counter)
        with self._lock:
            old = self._remote.get(spec.name)
            self._remote[spec.name] = model
        if old is not None:
            old.close()
        else:
            logger.info(
                "remote model %s: %s, %d dimensions", spec.name, spec.describe(), spec.dimensions
            )
        metrics.model_loaded(spec.name)
        return model

    def _tokenizer_file(self, name: str) -> Any:
        """A tokenizer by a tokenizer.json's path or a local model's name or directory."""
        key = f"file:{name}"
        with self._lock:
            found = self._tokenizers.get(key)
        if found is None:
            path = Path(name).expanduser()
            if path.suffix == ".json":
                if not path.is_file():
                    raise exceptions.ModelNotFound(f"no tokenizer file {path}")
                tokenizer_file = path
            else:
                tokenizer_file = files.ModelDir.read(
                    self.location.locate(name), name=name
                ).tokenizer_file
            found = onnx.load_tokenizer(tokenizer_file, max_tokens=None)
            with self._lock:
                found = self._tokenizers.setdefault(key, found)
        return found
