"""One file of a registry model fetched from the hub into a staging directory, verified.

`fetch_verified()` is what `download.download()` calls per file: the hub's report checked
against the pin, the transfer (huggingface_hub's, its progress bars on a terminal), then the
checksum. A stop event ends a transfer between two chunks (`Stopped`). Failures become one
`DownloadError` whose message says what happened: the hub unreachable (then: how to fetch the
model elsewhere), the hub answering an HTTP error, or a transfer cut short (then: try again).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from pathlib import Path
from typing import Any, Literal

from worker import exceptions
from worker.models.catalog import ModelSpec, RemoteFile, Variant

logger = logging.getLogger(__name__)

SHA256 = re.compile(r"^[0-9a-f]{64}$")
GIT_SHA1 = re.compile(r"^[0-9a-f]{40}$")


class Stopped(exceptions.DownloadError):
    """The download was stopped (the worker is stopping)."""


def fetch_verified(
    spec: ModelSpec,
    remote: RemoteFile,
    staging: Path,
    *,
    endpoint: str | None,
    variant: Variant | Literal["all"],
    stop: threading.Event,
) -> tuple[str, int] | None:
    """Download one file into `staging` and verify it; its (sha256, size), None if skipped."""
    huggingface_hub = _hub()
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
                tqdm_class=_stoppable(stop),
            )
        )
    except exceptions.DownloadError:
        raise
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
        if stop.is_set():
            raise Stopped(f"the download of {spec.name} was stopped") from exc
        raise exceptions.DownloadError(
            failed_message(spec, remote, variant, endpoint, exc)
        ) from exc
    return _verify(local, spec, remote, reported)


def _verify(
    local: Path, spec: ModelSpec, remote: RemoteFile, reported: str | None
) -> tuple[str, int]:
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
    return sha256, local.stat().st_size


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


# --- what went wrong -----------------------------------------------------------------------------


def failed_message(
    spec: ModelSpec,
    remote: RemoteFile,
    variant: Variant | Literal["all"],
    endpoint: str | None,
    exc: BaseException,
) -> str:
    """Why `remote` could not be fetched, and what to do: only a hub that could not be reached
    calls for fetching the model on another machine; one that answered with an error, or a
    transfer cut short, for trying again."""
    where = endpoint or _hub().constants.ENDPOINT
    retry = f"`embed-worker model download {spec.name} --variant {variant}`"
    status = _status(exc)
    if status is not None:
        why = "it limits the rate of downloads: " if status == 429 else ""
        return (
            f"cannot download {spec.name}: the hub at {where} answered HTTP {status} for "
            f"{remote.path} ({_first_line(exc)}); nothing was added to the cache. "
            f"{why.capitalize()}try again later ({retry})."
        )
    if not _unreachable(exc):
        return (
            f"cannot download {spec.name}: the transfer of {remote.path} from {where} failed "
            f"({type(exc).__name__}: {_first_line(exc)}); nothing was added to the cache. "
            f"Try again ({retry})."
        )
    return (
        f"cannot download {spec.name} from {where} ({type(exc).__name__}: {_first_line(exc)}). "
        f"On a machine without access to the hub, run {retry} "
        "where it has access and copy the model directory over, then set EMBED_MODEL_PATH to its "
        "parent directory (or HF_ENDPOINT to a reachable mirror)."
    )


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _unreachable(exc: BaseException) -> bool:
    """No connection to the hub could be made (refused, no route, no name, timed out while
    connecting, or huggingface_hub's offline mode)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionError) or type(seen).__name__ in (
            "ConnectError",
            "ConnectTimeout",
            "ConnectionError",  # requests'
            "NameResolutionError",
        ):
            return True
        seen = seen.__cause__
    return False


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


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


# --- huggingface_hub -----------------------------------------------------------------------------


def _hub() -> Any:
    """huggingface_hub, imported on first use (listing and loading models must not pay for it).
    It logs through a handler of its own as well as ours when the program configured logging
    (worker/logs.py): each of its warnings (retries) came out twice. Ours alone then."""
    import huggingface_hub

    own = logging.getLogger("huggingface_hub")
    if logging.getLogger().handlers and own.propagate:
        own.handlers[:] = [h for h in own.handlers if type(h) is not logging.StreamHandler]
    return huggingface_hub


def _stoppable(stop: threading.Event) -> Any:
    """huggingface_hub's progress bar class, made to end the transfer at its next chunk once
    `stop` is set (the bar is updated per chunk, shown or not)."""
    from huggingface_hub.utils.tqdm import tqdm as hub_tqdm

    class StoppableBar(hub_tqdm):
        def update(self, n: float | None = 1) -> bool | None:
            if stop.is_set():
                raise Stopped("the download was stopped")
            result: bool | None = super().update(n)
            return result

    return StoppableBar
