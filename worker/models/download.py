"""Fetching registry models from the hub: pinned revision, verified checksums, one download.

`download()` is `embed-worker model download`; `ensure()` is what the worker, the demo, `embed`
and `search` call: whatever `ModelLocation.locate()` finds on disk wins, and a registry model
that is not there is downloaded on first use (checksum-verified, one download for all processes
sharing the cache, thanks to a file lock), unless downloads are off (`EMBED_OFFLINE=1` or
huggingface_hub's `HF_HUB_OFFLINE=1`); then `ModelNotFound` says which files to fetch and where
to put them.
Nothing here reads the environment: the Settings decide (`settings.downloads`, a DownloadPolicy,
and `settings.model_location`).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import re
import shutil
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from worker import exceptions
from worker.models import hub
from worker.models.catalog import REGISTRY, ModelSpec, Variant
from worker.models.files import CACHE_DIR, MODEL_PATH, ONNX_FP32, ModelLocation, looks_like_path
from worker.models.manifest import MANIFEST, Manifest

logger = logging.getLogger(__name__)

T = TypeVar("T")
LOCK_POLL_SECONDS = 0.25  # how often a wait for another process's download looks again

__all__ = ["MANIFEST", "DownloadPolicy", "download", "ensure", "plan"]


@dataclass(frozen=True)
class DownloadPolicy:
    """Whether a missing registry model may be downloaded, and from where (`settings.downloads`).

    `off_by` names the setting that turned downloads off (EMBED_OFFLINE or HF_HUB_OFFLINE), and
    `off_value` its value as set, for messages; None: downloads are on. `endpoint` is the hub
    address (HF_ENDPOINT); None: huggingface_hub's default, https://huggingface.co."""

    off_by: str | None = None
    endpoint: str | None = None
    off_value: str = "1"  # off_by's value as set (yes, true, on, 1), for messages

    @property
    def off_as_set(self) -> str:
        """The setting that turned downloads off, as the operator wrote it: EMBED_OFFLINE=yes."""
        return f"{self.off_by}={self.off_value}"


# --- download ------------------------------------------------------------------------------------


def download(
    name: str,
    *,
    variant: Variant | Literal["all"] = "fp32",
    location: ModelLocation,
    endpoint: str | None = None,
    stop: threading.Event | None = None,
) -> Path:
    """Fetch a registry model at its pinned revision into the cache; return its directory.

    Files already downloaded are checked against the directory's manifest (their size, then
    their sha256) and kept when they match; a damaged one (truncated, overwritten) is fetched
    again. Every new file is checked against its pinned sha256, or against the hub's own report
    where none is pinned, before it enters the cache (`location.cache`): a mismatch raises
    `DownloadError` and leaves nothing behind. `endpoint` is the hub address (default:
    huggingface_hub's, https://huggingface.co). `stop` ends the download (`hub.Stopped`): the
    wait for another process's download of the same model, or the transfer at its next chunk.
    """
    spec = REGISTRY.get(name)
    if spec is None:
        raise exceptions.ModelNotFound(unknown_message(name))
    if variant not in ("fp32", "int8", "all"):
        raise ValueError(f"variant must be fp32, int8 or all, not {variant!r}")
    root = location.cache
    dest = root / spec.name
    stop = stop or threading.Event()
    with _download_lock(root, spec.name, stop):
        _sweep_staging(root, spec.name)
        manifest = Manifest.read(dest, spec)
        for path in manifest.damaged(dest, deep=True):
            logger.warning(
                "%s in %s is damaged (not the size or sha256 recorded when it was downloaded):"
                " fetching it again",
                path,
                dest,
            )
            manifest.forget(path)
        missing = [f for f in spec.files_for(variant) if f.path not in manifest.files]
        if not missing:
            logger.info("%s (%s) is already in %s, its files verified", spec.name, variant, dest)
            return dest
        staging = _cache_op(root, lambda: Path(tempfile.mkdtemp(prefix=_staging(spec), dir=root)))
        _STAGING.add(staging)
        try:
            with _progress_bars():
                for remote in missing:
                    logger.info("downloading %s/%s", spec.repo_id, remote.path)
                    got = hub.fetch_verified(
                        spec, remote, staging, endpoint=endpoint, variant=variant, stop=stop
                    )
                    if got is not None:
                        manifest.record(remote.path, *got)
            shutil.rmtree(staging / ".cache", ignore_errors=True)  # huggingface_hub's bookkeeping
            _cache_op(root, lambda: _install(staging, dest, spec, manifest))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            _STAGING.discard(staging)
    logger.info("downloaded %s@%s (%s) into %s", spec.repo_id, spec.revision, variant, dest)
    return dest


def unknown_message(name: str) -> str:
    return f"unknown model {name!r}; `embed-worker model download` knows: {', '.join(REGISTRY)}"


def _staging(spec: ModelSpec) -> str:
    """The prefix of a download's staging directory in the cache (tempfile adds 8 characters)."""
    return f".{spec.name}.staging-"


# The staging directories of downloads in progress in this process. A worker that stops does not
# wait for a download (it runs on a daemon thread): what it fetched so far goes at exit.
_STAGING: set[Path] = set()


@atexit.register
def _remove_abandoned() -> None:
    for staging in list(_STAGING):
        shutil.rmtree(staging, ignore_errors=True)


def _sweep_staging(root: Path, name: str) -> None:
    """Removes the staging directories a download of `name` left behind when its process was
    killed (its `finally` never ran). Called with the model's download lock held: no download
    of that model into this cache is in progress, so every one of them is stale. (The names of
    releases before 0.4.0 had no "staging-": `.NAME.` and 8 characters.)"""
    stale = re.compile(rf"^\.{re.escape(name)}\.(staging-)?[a-z0-9_]{{8}}$")
    try:
        found = [p for p in root.iterdir() if p.is_dir() and stale.match(p.name)]
    except OSError:
        return
    for path in found:
        logger.info("removing %s, left by an interrupted download", path)
        shutil.rmtree(path, ignore_errors=True)


def _install(staging: Path, dest: Path, spec: ModelSpec, manifest: Manifest) -> None:
    """Move verified files from `staging` into `dest` and record them in the manifest."""
    manifest.write(staging, spec)
    # mkdtemp made the directory 0700: readable by the service user only if it downloaded it.
    _readable_as_umask(staging)
    if not dest.exists():
        os.replace(staging, dest)  # one rename: the directory appears complete or not at all
        return
    moved = sorted(p for p in staging.rglob("*") if p.is_file() and p.name != MANIFEST)
    # Model weights last, so an interrupted move never leaves new weights beside old tokenizers.
    for path in sorted(moved, key=lambda p: p.suffix == ".onnx"):
        target = dest / path.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    os.replace(staging / MANIFEST, dest / MANIFEST)


def _readable_as_umask(staging: Path) -> None:
    """Gives `staging` the mode a plain mkdir gets under this process's umask (0755 with 022),
    found by making one: reading the umask means setting it, for every thread at once."""
    probe = staging / ".mode"
    probe.mkdir()
    mode = stat.S_IMODE(probe.stat().st_mode)
    probe.rmdir()
    staging.chmod(mode)


def _cache_op(root: Path, operation: Callable[[], T]) -> T:
    """`operation` on the cache; a cache this process cannot write is a configuration error
    naming the setting, not a traceback of the errno."""
    try:
        return operation()
    except OSError as exc:
        raise exceptions.CacheNotWritable(
            f"cannot write the model cache {root.absolute()} ({exc.strerror or exc}): set "
            f"{CACHE_DIR} (or --cache-dir) to a directory this user can write, or put the model "
            f"on {MODEL_PATH}"
        ) from exc


# --- fetch on first use --------------------------------------------------------------------------


def ensure(
    name_or_path: str,
    *,
    variant: Variant = "fp32",
    location: ModelLocation,
    policy: DownloadPolicy,
    stop: threading.Event | None = None,
) -> Path:
    """The model directory for `name_or_path`, downloading a registry model on first use.

    Anything found on disk wins (the search path, then the cache). A registry model that is
    absent is downloaded into the cache unless the policy says downloads are off; then, and for
    unknown names, `ModelNotFound` says exactly what to fetch and where to put it.
    """
    found = plan(name_or_path, variant=variant, location=location, policy=policy)
    if isinstance(found, Path):
        return found
    return download(
        found.name, variant=variant, location=location, endpoint=policy.endpoint, stop=stop
    )


def plan(
    name_or_path: str, *, variant: Variant = "fp32", location: ModelLocation, policy: DownloadPolicy
) -> Path | ModelSpec:
    """The model directory of `name_or_path` on disk, or the registry model that must be
    downloaded first (`ensure()` downloads it; the worker does it in the background). Never
    touches the network; raises `ModelNotFound` as `ensure()` does."""
    spec = None if looks_like_path(name_or_path) else REGISTRY.get(name_or_path)
    try:
        found = location.locate(name_or_path)
    except exceptions.ModelNotFound as exc:
        if spec is None:
            raise
        if any((base / name_or_path).is_dir() for base in location.path):
            raise  # the operator put an incomplete copy on EMBED_MODEL_PATH: say what it lacks
        if policy.off_by is not None:
            raise exceptions.ModelNotFound(
                offline_message(spec, variant, location, policy)
            ) from exc
    else:
        # A cached int8-only download (`model download --variant int8`) asked for fp32: fetch
        # the fp32 weights beside it when downloads are on (else loading says what is missing).
        int8_only = not any((found / f).is_file() for f in ONNX_FP32)
        cached = spec is not None and found == location.cache / spec.name
        if not (cached and variant == "fp32" and int8_only and policy.off_by is None):
            return found
    assert spec is not None
    logger.info(
        "model %s is not present: downloading %s@%s into %s",
        spec.name,
        spec.repo_id,
        spec.revision[:12],
        location.cache,
    )
    return spec


def offline_message(
    spec: ModelSpec, variant: Variant, location: ModelLocation, policy: DownloadPolicy
) -> str:
    dest = location.cache.absolute() / spec.name
    files = ", ".join(f.path for f in spec.files_for(variant) if not f.optional)
    return (
        f"model {spec.name!r} is not present and downloads are off ({policy.off_as_set}). Fetch "
        f"it where the hub is reachable with `embed-worker model download {spec.name} --variant "
        f"{variant}` and copy the directory to {dest}, or put it in a directory named {spec.name}"
        f" under a directory of EMBED_MODEL_PATH (an absolute path, e.g. "
        f"EMBED_MODEL_PATH=/srv/models). The files: {files} from "
        f"https://huggingface.co/{spec.repo_id} at revision {spec.revision}."
    )


@contextlib.contextmanager
def _download_lock(root: Path, name: str, stop: threading.Event) -> Iterator[None]:
    """An exclusive lock per model and cache: concurrent processes download once; the others
    wait here, then find the files in the manifest. The wait polls, so that `stop` ends it."""
    locks = root / ".locks"
    _cache_op(root, lambda: locks.mkdir(parents=True, exist_ok=True))
    with _cache_op(root, lambda: (locks / f"{name}.lock").open("a")) as handle:
        said = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not said:
                    logger.info(
                        "another process is downloading %s into %s; waiting for it", name, root
                    )
                    said = True
            if stop.wait(LOCK_POLL_SECONDS):
                raise hub.Stopped(f"stopped while waiting for another download of {name}")
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _progress_bars() -> contextlib.AbstractContextManager[None]:
    """huggingface_hub's progress bars on a terminal; off in a service, which logs instead."""
    from huggingface_hub.utils.tqdm import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    @contextlib.contextmanager
    def scoped() -> Iterator[None]:
        was_disabled = are_progress_bars_disabled()
        if sys.stderr.isatty():
            enable_progress_bars()
        else:
            disable_progress_bars()
        try:
            yield
        finally:
            (disable_progress_bars if was_disabled else enable_progress_bars)()

    return scoped()
