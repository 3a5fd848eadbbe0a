"""Known embedding models: where they come from, where they live on disk, how to fetch them.

What the CLI calls:
- `embed-worker model list`      → `models.list_models()`: one `ModelRow` per known model (and per
  extra model directory found on `EMBED_MODEL_PATH`), with `present` and `location`.
- `embed-worker model download NAME [--variant fp32|int8|all]`
                                 → `models.download(NAME, variant=...)`; returns the directory.
  Errors are `exceptions.DownloadError` (network, checksum) or `exceptions.ModelNotFound`
  (unknown name); print `str(exc)`, it says what to do.
- `embed-worker embed [--model M] TEXT...`
                                 → `embedder.Embedder.load(M or settings.model,
                                   variant=settings.model_variant, threads=settings.threads)`,
                                   then `.embed(texts).tolist()`.
`locate()` never touches the network. `ensure()` is what the worker, the demo, `embed` and
`search` call: a registry model that is not on disk is downloaded on first use (checksum-verified,
one download for all processes sharing the cache, thanks to a file lock), unless downloads are
off (`EMBED_OFFLINE=1` or huggingface_hub's `HF_HUB_OFFLINE=1`); then `ModelNotFound` says which
files to fetch and where to put them.

A model directory holds `model.onnx` or `onnx/model.onnx`, `tokenizer.json`, and optionally
`config.json`, `tokenizer_config.json`, `sentence_bert_config.json`, `1_Pooling/config.json`, and
an int8 file `model_quantized.onnx` (or `onnx/model_quantized.onnx`). Names resolve through the
directories of `EMBED_MODEL_PATH` (`<dir>/<name>/`), then the download cache `EMBED_CACHE_DIR`
(default `~/.cache/embed-worker`).
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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from worker import exceptions

logger = logging.getLogger(__name__)

Pooling = Literal["mean", "cls"]
Variant = Literal["fp32", "int8"]
FileVariant = Literal["any", "fp32", "int8"]

DEFAULT_MODEL = "gte-small"
DEFAULT_CACHE_DIR = "~/.cache/embed-worker"
MANIFEST = "embed-worker.json"  # written by download(): repo, revision, sha256 of each file
ONNX_FP32 = ("model.onnx", "onnx/model.onnx")
ONNX_INT8 = ("model_quantized.onnx", "onnx/model_quantized.onnx")

SHA256 = re.compile(r"^[0-9a-f]{64}$")
GIT_SHA1 = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class RemoteFile:
    """One file of a model repository on the hub.

    `sha256` is pinned where a real value could be found in public sources; `None` means the
    download is verified against what the hub itself reports for the pinned revision (the sha256
    of an LFS file, the git blob sha1 of a small file).
    """

    path: str
    sha256: str | None = None
    variant: FileVariant = "any"
    optional: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """A model the worker knows by name."""

    name: str
    repo_id: str
    revision: str  # a commit hash, never a branch
    dim: int
    pooling: Pooling
    max_tokens: int
    files: tuple[RemoteFile, ...]
    int8_file: str | None  # repo path of a shipped int8 file; None: quantized locally on first use
    description: str

    def files_for(self, variant: Variant | Literal["all"]) -> list[RemoteFile]:
        """The files `download(variant=...)` fetches; int8 without a shipped file needs fp32."""
        if variant == "all":
            return list(self.files)
        wanted: set[FileVariant] = {"any", variant}
        if variant == "int8" and self.int8_file is None:
            wanted.add("fp32")
        return [f for f in self.files if f.variant in wanted]


# Revisions and checksums. Every revision below is a real commit of its repository, and every
# sha256 written out is a value published for that file by independent public sources (model
# pin lists in other projects' code, cross-checked against each other and, where we have the
# file, against our local copy in ../shared/models). Files with `sha256=None` have no published
# value we could find: download() verifies them against the hub's own report instead.
#
# Supabase/gte-small @ 93b36ff0: the revision Supabase-based projects pin for transformers.js.
#   tokenizer.json, tokenizer_config.json, special_tokens_map.json and onnx/model_quantized.onnx
#   are pinned (the quantized file is byte-identical to Xenova/gte-small's); config.json and the
#   fp32 onnx/model.onnx are hub-reported.
# sentence-transformers/all-MiniLM-L6-v2 @ c9745ed1: the revision that added onnx/; onnx/model.onnx,
#   tokenizer.json, config.json, tokenizer_config.json, special_tokens_map.json and
#   1_Pooling/config.json are pinned (the last five equal ../shared/models' copies byte for byte);
#   sentence_bert_config.json is hub-reported. The repo ships only CPU-specific int8 exports, so
#   int8 is quantized locally.
# BAAI/bge-small-en-v1.5 @ 5c38ec7c: onnx/model.onnx, tokenizer.json, config.json,
#   tokenizer_config.json and special_tokens_map.json are pinned; 1_Pooling/config.json and
#   sentence_bert_config.json are hub-reported. No int8 file: quantized locally.
REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="gte-small",
            repo_id="Supabase/gte-small",
            revision="93b36ff09519291b77d6000d2e86bd8565378086",
            dim=384,
            pooling="mean",
            max_tokens=512,
            files=(
                RemoteFile("config.json"),
                RemoteFile(
                    "tokenizer.json",
                    "da0e79933b9ed51798a3ae27893d3c5fa4a201126cef75586296df9b4d2c62a0",
                ),
                RemoteFile(
                    "tokenizer_config.json",
                    "73687f47b47aedc8bfa8712f7e6616450058f1f1bb3d5e5861f8a92964d6467a",
                ),
                RemoteFile(
                    "special_tokens_map.json",
                    "b6d346be366a7d1d48332dbc9fdf3bf8960b5d879522b7799ddba59e76237ee3",
                ),
                RemoteFile("onnx/model.onnx", variant="fp32"),
                RemoteFile(
                    "onnx/model_quantized.onnx",
                    "18dec105109b6004369799ca4761fb8fb413c64172c02147bcfac186b5c5f6cb",
                    variant="int8",
                ),
            ),
            int8_file="onnx/model_quantized.onnx",
            description="General Text Embeddings small; what Supabase's automatic embeddings use",
        ),
        ModelSpec(
            name="all-MiniLM-L6-v2",
            repo_id="sentence-transformers/all-MiniLM-L6-v2",
            revision="c9745ed1d9f207416be6d2e6f8de32d1f16199bf",
            dim=384,
            pooling="mean",
            max_tokens=256,
            files=(
                RemoteFile(
                    "config.json",
                    "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
                ),
                RemoteFile(
                    "tokenizer.json",
                    "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                ),
                RemoteFile(
                    "tokenizer_config.json",
                    "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
                ),
                RemoteFile(
                    "special_tokens_map.json",
                    "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
                ),
                RemoteFile("sentence_bert_config.json"),
                RemoteFile(
                    "1_Pooling/config.json",
                    "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
                ),
                RemoteFile(
                    "onnx/model.onnx",
                    "6fd5d72fe4589f189f8ebc006442dbb529bb7ce38f8082112682524616046452",
                    variant="fp32",
                ),
            ),
            int8_file=None,
            description="sentence-transformers MiniLM, 6 layers",
        ),
        ModelSpec(
            name="bge-small-en-v1.5",
            repo_id="BAAI/bge-small-en-v1.5",
            revision="5c38ec7c405ec4b44b94cc5a9bb96e735b38267a",
            dim=384,
            pooling="cls",
            max_tokens=512,
            files=(
                RemoteFile(
                    "config.json",
                    "094f8e891b932f2000c92cfc663bac4c62069f5d8af5b5278c4306aef3084750",
                ),
                RemoteFile(
                    "tokenizer.json",
                    "d241a60d5e8f04cc1b2b3e9ef7a4921b27bf526d9f6050ab90f9267a1f9e5c66",
                ),
                RemoteFile(
                    "tokenizer_config.json",
                    "9261e7d79b44c8195c1cada2b453e55b00aeb81e907a6664974b4d7776172ab3",
                ),
                RemoteFile(
                    "special_tokens_map.json",
                    "b6d346be366a7d1d48332dbc9fdf3bf8960b5d879522b7799ddba59e76237ee3",
                ),
                RemoteFile("sentence_bert_config.json", optional=True),
                RemoteFile("1_Pooling/config.json", optional=True),
                RemoteFile(
                    "onnx/model.onnx",
                    "828e1496d7fabb79cfa4dcd84fa38625c0d3d21da474a00f08db0f559940cf35",
                    variant="fp32",
                ),
            ),
            int8_file=None,
            description="BAAI general embedding, small, English (CLS pooling)",
        ),
    )
}


def known_models() -> list[ModelSpec]:
    """The registry, default model first."""
    return sorted(REGISTRY.values(), key=lambda s: (s.name != DEFAULT_MODEL, s.name))


# --- where models live -------------------------------------------------------------------------


def cache_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The download cache: `explicit`, else `EMBED_CACHE_DIR`, else ~/.cache/embed-worker."""
    raw = explicit if explicit is not None else (os.environ.get("EMBED_CACHE_DIR") or None)
    return Path(raw if raw is not None else DEFAULT_CACHE_DIR).expanduser()


def model_path_dirs() -> list[Path]:
    """The directories of `EMBED_MODEL_PATH`, in order (empty entries skipped), made absolute
    against the working directory so that messages name the directory really searched."""
    raw = os.environ.get("EMBED_MODEL_PATH", "")
    return [
        Path(os.path.abspath(Path(part).expanduser()))
        for part in raw.split(os.pathsep)
        if part.strip()
    ]


def search_dirs(cache_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Where a model name is looked up: `EMBED_MODEL_PATH` entries, then the cache."""
    return [*model_path_dirs(), cache_root(cache_dir)]


def is_model_dir(path: Path) -> bool:
    return (path / "tokenizer.json").is_file() and any((path / f).is_file() for f in ONNX_FP32)


def looks_like_path(name_or_path: str) -> bool:
    """Paths contain a separator or start with . or ~; model names do neither."""
    return os.sep in name_or_path or "/" in name_or_path or name_or_path.startswith((".", "~"))


def locate(name_or_path: str, *, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The model directory for a registry name, a directory name on the search path, or a path.

    Never opens a network connection. Raises `ModelNotFound` with one message naming the fix.
    """
    if looks_like_path(name_or_path):
        direct = Path(name_or_path).expanduser()
        if is_model_dir(direct):
            return direct
        raise exceptions.ModelNotFound(_not_a_model_dir(direct))
    searched = search_dirs(cache_dir)
    for base in searched:
        candidate = base / name_or_path
        if is_model_dir(candidate):
            return candidate
    if is_model_dir(Path(name_or_path)):  # a bare directory name relative to the working directory
        return Path(name_or_path)
    raise exceptions.ModelNotFound(_missing_message(name_or_path, searched))


def _not_a_model_dir(path: Path) -> str:
    path = Path(os.path.abspath(path))
    if not path.exists():
        what = "does not exist"
    elif not path.is_dir():
        what = "is not a directory"
    else:
        missing = [
            name
            for name, present in (
                ("model.onnx (or onnx/model.onnx)", _first_file(path, ONNX_FP32) is not None),
                ("tokenizer.json", (path / "tokenizer.json").is_file()),
            )
            if not present
        ]
        what = f"is not a model directory: {' and '.join(missing)} missing"
    return (
        f"{path} {what}. A model directory holds tokenizer.json and model.onnx "
        "(or onnx/model.onnx)."
    )


def _incomplete_dirs(name: str, searched: list[Path]) -> list[Path]:
    """Directories named `name` on the search path that lack a file a model needs."""
    return [base / name for base in searched if (base / name).is_dir()]


def _missing_message(name: str, searched: list[Path]) -> str:
    where = ", ".join(str(p) for p in searched)
    incomplete = _incomplete_dirs(name, searched)
    if incomplete:
        return _not_a_model_dir(incomplete[0])
    if name in REGISTRY:
        return (
            f"model {name!r} is not present (looked in {where}). "
            f"Fetch it with `embed-worker model download {name}`, or set EMBED_MODEL_PATH to a "
            f"directory that contains {name}/ (tokenizer.json and model.onnx)."
        )
    return (
        f"unknown model {name!r} (looked in {where}). Known models: "
        f"{', '.join(REGISTRY)}; download one with `embed-worker model download NAME`, or set "
        f"EMBED_MODEL_PATH to a directory that contains {name}/ (tokenizer.json and model.onnx)."
    )


# --- what a model directory says about itself ----------------------------------------------------


@dataclass(frozen=True)
class ModelDir:
    """The files and settings of one model directory, read without loading the model."""

    path: Path
    name: str
    tokenizer_file: Path
    fp32_file: Path
    int8_file: Path | None
    max_tokens: int
    pooling: Pooling
    hidden_size: int | None

    @classmethod
    def read(cls, path: Path, *, name: str | None = None) -> ModelDir:
        """Read `path`; registry settings for `name` (default: the directory name) fill gaps."""
        name = name or path.name
        spec = REGISTRY.get(name)
        fp32 = _first_file(path, ONNX_FP32)
        if fp32 is None or not (path / "tokenizer.json").is_file():
            raise exceptions.ModelNotFound(_not_a_model_dir(path))
        int8_names = (spec.int8_file,) if spec and spec.int8_file else ()
        config = _read_json(path / "config.json")
        return cls(
            path=path,
            name=name,
            tokenizer_file=path / "tokenizer.json",
            fp32_file=fp32,
            int8_file=_first_file(path, (*ONNX_INT8, *int8_names)),
            max_tokens=_max_tokens(path, config, spec),
            pooling=_pooling(path, spec),
            hidden_size=_int_or_none(config.get("hidden_size")),
        )


def _first_file(base: Path, names: Iterable[str]) -> Path | None:
    return next((base / n for n in names if (base / n).is_file()), None)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise exceptions.ModelError(f"{path}: cannot read it as JSON ({exc})") from exc
    return data if isinstance(data, dict) else {}


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _max_tokens(path: Path, config: dict[str, Any], spec: ModelSpec | None) -> int:
    """`max_seq_length` of sentence_bert_config.json, else `max_position_embeddings`."""
    positions = _int_or_none(config.get("max_position_embeddings"))
    declared = _int_or_none(_read_json(path / "sentence_bert_config.json").get("max_seq_length"))
    limit = declared or positions or (spec.max_tokens if spec else None) or 512
    # A sequence longer than the position table would index past it and fail inside the graph.
    return min(limit, positions) if positions else limit


def _pooling(path: Path, spec: ModelSpec | None) -> Pooling:
    """Pooling from 1_Pooling/config.json, else the registry, else mean."""
    config = _read_json(path / "1_Pooling" / "config.json")
    if config.get("pooling_mode_cls_token"):
        return "cls"
    if config.get("pooling_mode_mean_tokens"):
        return "mean"
    return spec.pooling if spec else "mean"


# --- model list ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRow:
    """One line of `embed-worker model list`."""

    name: str
    dim: int | None
    pooling: Pooling
    max_tokens: int
    present: bool
    location: Path | None
    source: str  # "hub repo@revision" for registry models, "local" otherwise


def list_models(*, cache_dir: str | os.PathLike[str] | None = None) -> list[ModelRow]:
    """Known models with where each is found, then other model directories on EMBED_MODEL_PATH."""
    rows: list[ModelRow] = []
    for spec in known_models():
        try:
            location: Path | None = locate(spec.name, cache_dir=cache_dir)
        except exceptions.ModelNotFound:
            location = None
        rows.append(
            ModelRow(
                name=spec.name,
                dim=spec.dim,
                pooling=spec.pooling,
                max_tokens=spec.max_tokens,
                present=location is not None,
                location=location,
                source=f"{spec.repo_id}@{spec.revision[:12]}",
            )
        )
    seen = set(REGISTRY)
    for base in model_path_dirs():
        for candidate in _subdirs(base):
            if candidate.name in seen or not is_model_dir(candidate):
                continue
            seen.add(candidate.name)
            try:
                info = ModelDir.read(candidate)
            except exceptions.ModelError as exc:
                logger.warning("skipping %s in the model list: %s", candidate, exc)
                continue
            rows.append(
                ModelRow(
                    name=candidate.name,
                    dim=info.hidden_size,
                    pooling=info.pooling,
                    max_tokens=info.max_tokens,
                    present=True,
                    location=candidate,
                    source="local",
                )
            )
    return rows


def _subdirs(base: Path) -> Iterator[Path]:
    try:
        yield from sorted(p for p in base.iterdir() if p.is_dir())
    except OSError:
        return


# --- download ------------------------------------------------------------------------------------


def download(
    name: str,
    *,
    variant: Variant | Literal["all"] = "fp32",
    cache_dir: str | os.PathLike[str] | None = None,
    endpoint: str | None = None,
) -> Path:
    """Fetch a registry model at its pinned revision into the cache; return its directory.

    Files already downloaded (recorded in the directory's manifest) are kept. Every new file is
    checked against its pinned sha256, or against the hub's own report where none is pinned,
    before it enters the cache: a mismatch raises `DownloadError` and leaves nothing behind.
    `endpoint` overrides the hub address (default: `HF_ENDPOINT` or https://huggingface.co).
    """
    spec = REGISTRY.get(name)
    if spec is None:
        raise exceptions.ModelNotFound(
            f"unknown model {name!r}; `embed-worker model download` knows: {', '.join(REGISTRY)}"
        )
    if variant not in ("fp32", "int8", "all"):
        raise ValueError(f"variant must be fp32, int8 or all, not {variant!r}")
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None  # read now, not at import
    root = cache_root(cache_dir)
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
                    digest = _fetch_verified(spec, remote, staging, endpoint)
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
    data = _read_json(dest / MANIFEST)
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
    spec: ModelSpec, remote: RemoteFile, staging: Path, endpoint: str | None
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
        raise exceptions.DownloadError(_unreachable_message(spec, endpoint, exc)) from exc
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


def _unreachable_message(spec: ModelSpec, endpoint: str | None, exc: BaseException) -> str:
    import huggingface_hub.constants

    where = endpoint or huggingface_hub.constants.ENDPOINT
    return (
        f"cannot download {spec.name} from {where} ({type(exc).__name__}: {exc}). "
        f"On a machine without access to the hub, run `embed-worker model download {spec.name}` "
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

_TRUE = ("1", "true", "yes", "on")


def downloads_disabled() -> str | None:
    """The variable that turns downloads off (`EMBED_OFFLINE` or `HF_HUB_OFFLINE`), or None."""
    for variable in ("EMBED_OFFLINE", "HF_HUB_OFFLINE"):
        if os.environ.get(variable, "").strip().lower() in _TRUE:
            return variable
    return None


def ensure(
    name_or_path: str,
    *,
    variant: Variant = "fp32",
    cache_dir: str | os.PathLike[str] | None = None,
    endpoint: str | None = None,
) -> Path:
    """The model directory for `name_or_path`, downloading a registry model on first use.

    Anything found on disk wins (EMBED_MODEL_PATH, then the cache). A registry model that is
    absent is downloaded into the cache unless downloads are off; then, and for unknown names,
    `ModelNotFound` says exactly what to fetch and where to put it.
    """
    try:
        return locate(name_or_path, cache_dir=cache_dir)
    except exceptions.ModelNotFound as exc:
        spec = REGISTRY.get(name_or_path)
        if spec is None or looks_like_path(name_or_path):
            raise
        if any((base / name_or_path).is_dir() for base in model_path_dirs()):
            raise  # the operator put an incomplete copy on EMBED_MODEL_PATH: say what it lacks
        switch = downloads_disabled()
        if switch is not None:
            raise exceptions.ModelNotFound(
                _offline_message(spec, variant, cache_dir, switch)
            ) from exc
    logger.info(
        "model %s is not present: downloading %s@%s into %s",
        spec.name,
        spec.repo_id,
        spec.revision[:12],
        cache_root(cache_dir),
    )
    return download(spec.name, variant=variant, cache_dir=cache_dir, endpoint=endpoint)


def _offline_message(
    spec: ModelSpec, variant: Variant, cache_dir: str | os.PathLike[str] | None, switch: str
) -> str:
    dest = cache_root(cache_dir).absolute() / spec.name
    files = ", ".join(f.path for f in spec.files_for(variant) if not f.optional)
    return (
        f"model {spec.name!r} is not present and downloads are off ({switch}=1). Fetch it where "
        f"the hub is reachable with `embed-worker model download {spec.name}` and copy the "
        f"directory to {dest}, or put it in a directory named {spec.name} under a directory of "
        f"EMBED_MODEL_PATH (an absolute path, e.g. EMBED_MODEL_PATH=/srv/models). The files: "
        f"{files} from https://huggingface.co/{spec.repo_id} at revision {spec.revision}."
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
