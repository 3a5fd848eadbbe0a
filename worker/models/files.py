"""Model directories on disk: finding one by name or path, and what it says about itself.

What the CLI calls:
- `embed-worker model list`      → `files.list_models()`: one `ModelRow` per known model (and per
  extra model directory found on `EMBED_MODEL_PATH`), with `present` and `location`.
- `embed-worker model download NAME [--variant fp32|int8|all]`
                                 → `download.download(NAME, variant=...)`; returns the directory.
  Errors are `exceptions.DownloadError` (network, checksum) or `exceptions.ModelNotFound`
  (unknown name); print `str(exc)`, it says what to do.
- `embed-worker embed [--model M] TEXT...`
                                 → `embedder.Embedder.load(M or settings.model,
                                   variant=settings.model_variant, threads=settings.threads)`,
                                   then `.embed(texts).tolist()`.
`locate()` never touches the network; `download.ensure()` downloads a registry model on first use.
The models known by name are in `worker/models/catalog.py`.

A model directory holds `model.onnx` or `onnx/model.onnx`, `tokenizer.json`, and optionally
`config.json`, `tokenizer_config.json`, `sentence_bert_config.json`, `1_Pooling/config.json`, and
an int8 file `model_quantized.onnx` (or `onnx/model_quantized.onnx`). Names resolve through the
directories of `EMBED_MODEL_PATH` (`<dir>/<name>/`), then the download cache `EMBED_CACHE_DIR`
(default `~/.cache/embed-worker`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker import exceptions
from worker.models.catalog import REGISTRY, ModelSpec, Pooling, known_models

logger = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = "~/.cache/embed-worker"
ONNX_FP32 = ("model.onnx", "onnx/model.onnx")
ONNX_INT8 = ("model_quantized.onnx", "onnx/model_quantized.onnx")


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
        config = read_json(path / "config.json")
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


def read_json(path: Path) -> dict[str, Any]:
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
    declared = _int_or_none(read_json(path / "sentence_bert_config.json").get("max_seq_length"))
    limit = declared or positions or (spec.max_tokens if spec else None) or 512
    # A sequence longer than the position table would index past it and fail inside the graph.
    return min(limit, positions) if positions else limit


def _pooling(path: Path, spec: ModelSpec | None) -> Pooling:
    """Pooling from 1_Pooling/config.json, else the registry, else mean."""
    config = read_json(path / "1_Pooling" / "config.json")
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
