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

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from worker import exceptions
from worker.models.catalog import REGISTRY, ModelSpec, RemoteFile, Variant
from worker.models.files import ONNX_FP32, ModelLocation, looks_like_path, read_json

logger = logging.getLogger(__name__)

MANIFEST = "embed-worker.json"  # written by download(): repo, revision, sha256 of each file
SHA256 = re.compile(r"^[0-9a-f]{64}$")
GIT_SHA1 = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class DownloadPolicy:
    """Whether a missing registry model may be downloaded, and from where (`settings.downloads`).

    `off_by` names the setting that turned downloads off (EMBED_OFFLINE or HF_HUB_OFFLINE), for
    messages; None: downloads are on. `endpoint` is the hub address (HF_ENDPOINT); None:
    huggingface_hub's default, https://huggingface.co."""

    off_by: str | None = None
    endpoint: str | None = None


# --- download ------------------------------------------------------------------------------------


def download(
    name: str,
    *,
    variant: Variant | Literal["all"] = "fp32",
    location: ModelLocation,
    endpoint: str | None = None,
) -> Path:
    """Fetch a registry model at its pinned revision into the cache; return its directory.

    Files already downloaded (recorded in the directory's manifest) are kept. Every new file is
    checked against its pinned sha256, or against the hub's own report where none is pinned,
    before it enters the cache (`location.cache`): a mismatch raises `DownloadError` and leaves
    nothing behind. `endpoint` is the hub address (default:
    huggingface_hub's, https://huggingface.co).
    """
    spec = REGISTRY.get(name)
    if spec is None:
        raise exceptions.ModelNotFound(
            f"unknown model {name!r}; `embed-worker model download` knows: {', '.join(REGISTRY)}"
        )
    if variant not in ("fp32", "int8", "all"):
        raise ValueError(f"variant must be fp32, int8 or all, not {variant!r}")
    root = location.cache
    dest = root / spec.name
    with _download_lock(root, spec.name):
        manifest = _read_manifest(dest, spec)
        missing = [f for f in spec.files_for(variant) if f.path not in manifest]
        if not missing:
            logger.info("%s (%s) is already in %s", spec.name, variant, dest)
            return dest
        staging = Path(tempfile.mkdtemp(prefix=f".{spec.name}.", dir=root))
        try:
            with _progress_bars():
                for remote in missing:
                    logger.info("downloading %s/%s", spec.repo_id, remote.path)
                    digest = _fetch_verified(spec, remote, staging, endpoint, variant)
                    if digest is not None:
                        manifest[remote.path] = digest
            shutil.rmtree(staging / ".cache", ignore_errors=True)  # huggingface_hub's bookkeeping
            _install(staging, dest, spec, manifest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    logger.info("downloaded %s@%s (%s) into %s", spec.repo_id, spec.revision, variant, dest)
    return dest


def _read_manifest(dest: Path, spec: ModelSpec) -> dict[str, str]:
    """Files already verified for this revision that are still on disk."""
    data = read_json(dest / MANIFEST)
    if data.get("repo_id") != spec.repo_id or data.get("revision") != spec.revision:
        return {}
    files = data.get("files", {})
    if not isinstance(files, dict):
        return {}
    return {path: str(digest) for path, digest in files.items() if (dest / path).is_file()}


def _install(staging: Path, dest: Path, spec: ModelSpec, files: dict[str, str]) -> None:
    """Move verified files from `staging` into `dest` and record them in the manifest."""
    manifest = {"repo_id": spec.repo_id, "revision": spec.revision, "files": files}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
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


def _fetch_verified(
    spec: ModelSpec,
    remote: RemoteFile,
    staging: Path,
    endpoint: str | None,
    variant: Variant | Literal["all"],
) -> str | None:
    """Download one file into `staging` and verify it; returns its sha256, None if skipped."""
    import huggingface_hub  # imported here: listing and loading models must not pay for it

    url = huggingface_hub.hf_hub_url(
        spec.repo_id, remote.path, revision=spec.revision, endpoint=endpoint
    )
    try:
        meta = huggingface_hub.get_hf_file_metadata(url)
        if meta.commit_hash not in (None, spec.revision):
            raise exceptions.DownloadError(
                f"{url}: the hub answered for commit {meta.commit_hash}, not the pinned "
                f"{spec.revision}"
            )
        reported = _normalize_etag(meta.etag)
        if remote.sha256 and SHA256.match(reported or "") and reported != remote.sha256:
            raise exceptions.DownloadError(
                f"{spec.repo_id}/{remote.path}@{spec.revision[:12]}: the hub reports sha256 "
                f"{reported}, but {remote.sha256} is pinned; refusing to download it"
            )
        local = Path(
            huggingface_hub.hf_hub_download(
                spec.repo_id,
                remote.path,
                revision=spec.revision,
                local_dir=staging,
                endpoint=endpoint,
            )
        )
    except _not_on_hub_errors() as exc:
        raise exceptions.DownloadError(
            f"the hub has no {spec.repo_id} at revision {spec.revision} ({exc})"
        ) from exc
    except _missing_entry_errors() as exc:
        if remote.optional:
            logger.info("%s has no %s; skipped (optional)", spec.repo_id, remote.path)
            return None
        raise exceptions.DownloadError(
            f"{spec.repo_id}@{spec.revision[:12]} has no {remote.path} ({exc})"
        ) from exc
    except _network_errors() as exc:
        raise exceptions.DownloadError(_unreachable_message(spec, variant, endpoint, exc)) from exc
    return _verify(local, spec, remote, reported)


def _verify(local: Path, spec: ModelSpec, remote: RemoteFile, reported: str | None) -> str:
    sha256, git_sha1 = _digests(local)
    label = f"{spec.repo_id}/{remote.path}@{spec.revision[:12]}"
    if remote.sha256 is not None:
        expected, actual, kind = remote.sha256, sha256, "pinned sha256"
    elif reported is not None and SHA256.match(reported):
        expected, actual, kind = reported, sha256, "sha256 reported by the hub"
    elif reported is not None and GIT_SHA1.match(reported):
        expected, actual, kind = reported, git_sha1, "git blob sha1 reported by the hub"
    else:
        raise exceptions.DownloadError(f"{label}: no checksum to verify it against; refused")
    if actual != expected:
        local.unlink(missing_ok=True)
        raise exceptions.DownloadError(
            f"{label}: checksum mismatch ({kind} {expected}, downloaded file {actual}); "
            "the file was discarded, nothing was added to the cache"
        )
    logger.debug("%s verified against the %s", label, kind)
    return sha256


def _digests(path: Path) -> tuple[str, str]:
    """sha256 of the content and its git blob sha1 (what the hub reports for non-LFS files)."""
    sha256 = hashlib.sha256()
    git = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            sha256.update(chunk)
            git.update(chunk)
    return sha256.hexdigest(), git.hexdigest()


def _normalize_etag(etag: str | None) -> str | None:
    if not etag:
        return None
    return etag.removeprefix("W/").strip('"').lower()


def _unreachable_message(
    spec: ModelSpec, variant: str, endpoint: str | None, exc: BaseException
) -> str:
    import huggingface_hub.constants

    where = endpoint or huggingface_hub.constants.ENDPOINT
    command = f"embed-worker model download {spec.name} --variant {variant}"
    return (
        f"cannot download {spec.name} from {where} ({type(exc).__name__}: {exc}). "
        f"On a machine without access to the hub, run `{command}` "
        "where it has access and copy the model directory over, then set EMBED_MODEL_PATH to its "
        "parent directory (or HF_ENDPOINT to a reachable mirror)."
    )


def _not_on_hub_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub import errors

    return (errors.RepositoryNotFoundError, errors.RevisionNotFoundError)


def _missing_entry_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub import errors

    return (errors.RemoteEntryNotFoundError,)


def _network_errors() -> tuple[type[BaseException], ...]:
    """What the hub client raises when the hub is unreachable or refuses, across its versions."""
    from huggingface_hub import errors

    found: list[type[BaseException]] = [errors.HfHubHTTPError, errors.OfflineModeIsEnabled, OSError]
    for module in ("httpx2", "httpx", "requests"):
        try:
            http = __import__(module)
        except ImportError:
            continue
        base = getattr(http, "HTTPError", None) or getattr(http, "RequestException", None)
        if isinstance(base, type) and issubclass(base, BaseException):
            found.append(base)
    return tuple(found)


# --- fetch on first use --------------------------------------------------------------------------


def ensure(
    name_or_path: str,
    *,
    variant: Variant = "fp32",
    location: ModelLocation,
    policy: DownloadPolicy,
) -> Path:
    """The model directory for `name_or_path`, downloading a registry model on first use.

    Anything found on disk wins (the search path, then the cache). A registry model that is
    absent is downloaded into the cache unless the policy says downloads are off; then, and for
    unknown names, `ModelNotFound` says exactly what to fetch and where to put it.
    """
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
                offline_message(spec, variant, location, policy.off_by)
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
    return download(spec.name, variant=variant, location=location, endpoint=policy.endpoint)


def offline_message(spec: ModelSpec, variant: Variant, location: ModelLocation, off_by: str) -> str:
    dest = location.cache.absolute() / spec.name
    files = ", ".join(f.path for f in spec.files_for(variant) if not f.optional)
    return (
        f"model {spec.name!r} is not present and downloads are off ({off_by}=1). Fetch it where "
        f"the hub is reachable with `embed-worker model download {spec.name} --variant {variant}` "
        f"and copy the directory to {dest}, or put it in a directory named {spec.name} under a "
        f"directory of EMBED_MODEL_PATH (an absolute path, e.g. EMBED_MODEL_PATH=/srv/models). "
        f"The files: {files} from https://huggingface.co/{spec.repo_id} at revision "
        f"{spec.revision}."
    )


@contextlib.contextmanager
def _download_lock(root: Path, name: str) -> Iterator[None]:
    """An exclusive lock per model and cache: concurrent processes download once; the others
    wait here, then find the files in the manifest."""
    locks = root / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with (locks / f"{name}.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("another process is downloading %s into %s; waiting for it", name, root)
            fcntl.flock(handle, fcntl.LOCK_EX)
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
