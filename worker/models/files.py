"""Model directories on disk: finding one by name or path, and what it says about itself.

What the CLI calls (`location` is `settings.model_location`):
- `embed-worker model list`      → `files.list_models(location)`: one `ModelRow` per known model
  (and per extra model directory found on the search path), with `present` and `location`.
- `embed-worker model download NAME [--variant fp32|int8|all]`
                                 → `download.download(NAME, variant=..., location=...)`; returns
  the directory. Errors are `exceptions.DownloadError` (network, checksum) or
  `exceptions.ModelNotFound` (unknown name); print `str(exc)`, it says what to do.
- `embed-worker embed [--model M] TEXT...`
                                 → `embedder.Embedder.load(download.ensure(M, ...), variant=...,
                                   threads=..., location=...)`, then `.embed(texts).tolist()`.
`ModelLocation.locate()` never touches the network; `download.ensure()` downloads a registry model
on first use. The models known by name are in `worker/models/catalog.py`. Nothing here reads the
environment: the search path and cache come from the Settings (`settings.model_location`).

A model directory holds `model.onnx` or `onnx/model.onnx`, `tokenizer.json`, and optionally
`config.json`, `tokenizer_config.json`, `sentence_bert_config.json`, `1_Pooling/config.json`, and
an int8 file `model_quantized.onnx` (or `onnx/model_quantized.onnx`). Names resolve through the
directories of `EMBED_MODEL_PATH` (`<dir>/<name>/`), then the download cache `EMBED_CACHE_DIR`
(default `~/.cache/embed-worker`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker import exceptions
from worker.models import onnx_outputs
from worker.models.catalog import REGISTRY, ModelSpec, Pooling, known_models
from worker.models.manifest import Manifest

logger = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = "~/.cache/embed-worker"
MODEL_PATH = "EMBED_MODEL_PATH"  # the variables of a ModelLocation (Settings reads them too)
CACHE_DIR = "EMBED_CACHE_DIR"
ONNX_FP32 = ("model.onnx", "onnx/model.onnx")
ONNX_INT8 = ("model_quantized.onnx", "onnx/model_quantized.onnx")


# --- where models live -------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelLocation:
    """Where model names resolve: the directories of `path` (EMBED_MODEL_PATH), in order, then
    the download cache (EMBED_CACHE_DIR). Built from the Settings (`settings.model_location`);
    `ModelLocation.of()` is the default: no search path, the cache in ~/.cache/embed-worker."""

    path: tuple[Path, ...]
    cache: Path

    @classmethod
    def of(
        cls, model_path: str | None = None, cache_dir: str | os.PathLike[str] = DEFAULT_CACHE_DIR
    ) -> ModelLocation:
        """From EMBED_MODEL_PATH's text (colon-separated, empty entries skipped) and the cache
        directory. Entries are made absolute against the working directory, so that messages
        name the directory really searched."""
        dirs = tuple(
            Path(os.path.abspath(Path(part).expanduser()))
            for part in (model_path or "").split(os.pathsep)
            if part.strip()
        )
        return cls(path=dirs, cache=Path(cache_dir).expanduser())

    def search_dirs(self) -> list[Path]:
        """Where a model name is looked up: the search path, then the cache."""
        return [*self.path, self.cache]

    def locate(self, name_or_path: str) -> Path:
        """The model directory for a registry name, a directory name on the search path, or a
        path. Never opens a network connection. Raises `ModelNotFound` with one message naming
        the fix."""
        if looks_like_path(name_or_path):
            direct = Path(name_or_path).expanduser()
            if is_model_dir(direct):
                return direct
            raise exceptions.ModelNotFound(_not_a_model_dir(direct))
        searched = self.search_dirs()
        for base in searched:
            candidate = base / name_or_path
            if is_model_dir(candidate):
                return candidate
        if is_model_dir(Path(name_or_path)):  # a bare directory name relative to the working dir
            return Path(name_or_path)
        raise exceptions.ModelNotFound(_missing_message(name_or_path, searched))

    def incomplete(self, name: str) -> list[Path]:
        """Directories named `name` on the search path or in the cache that are no model
        directory (a copy that lacks a file)."""
        return [d for d in (base / name for base in self.search_dirs()) if d.is_dir()]

    def why_incomplete(self, path: Path) -> str:
        """What `path` lacks to be a model directory."""
        return _not_a_model_dir(path)


def is_model_dir(path: Path) -> bool:
    """tokenizer.json and weights: fp32, or int8 only (what `model download --variant int8`
    fetches for a model that ships an int8 file)."""
    return (path / "tokenizer.json").is_file() and any(
        (path / f).is_file() for f in (*ONNX_FP32, *ONNX_INT8)
    )


def looks_like_path(name_or_path: str) -> bool:
    """Paths contain a separator or start with . or ~; model names do neither."""
    return os.sep in name_or_path or "/" in name_or_path or name_or_path.startswith((".", "~"))


def _not_a_model_dir(path: Path) -> str:
    path = Path(os.path.abspath(path))
    if not path.exists():
        what = "does not exist"
    elif not path.is_dir():
        what = "is not a directory"
    else:
        what = f"is not a model directory: {' and '.join(_missing(path))} missing"
    return (
        f"{path} {what}. A model directory holds tokenizer.json and model.onnx "
        "(or onnx/model.onnx)."
    )


def _missing_message(name: str, searched: list[Path]) -> str:
    where = ", ".join(str(p) for p in searched)
    incomplete = [base / name for base in searched if (base / name).is_dir()]
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
    fp32_file: Path | None  # None: an int8-only directory
    int8_file: Path | None
    max_tokens: int
    pooling: Pooling
    hidden_size: int | None

    @classmethod
    def read(cls, path: Path, *, name: str | None = None) -> ModelDir:
        """Read `path`; registry settings for `name` (default: the directory name) fill gaps."""
        name = name or path.name
        spec = REGISTRY.get(name)
        if not is_model_dir(path):
            raise exceptions.ModelNotFound(_not_a_model_dir(path))
        int8_names = (spec.int8_file,) if spec and spec.int8_file else ()
        config = read_json(path / "config.json")
        return cls(
            path=path,
            name=name,
            tokenizer_file=path / "tokenizer.json",
            fp32_file=_first_file(path, ONNX_FP32),
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
    dim: int | None  # a built-in model's; a directory's, as its ONNX file declares it
    pooling: str  # "-": a cross-encoder, or a directory that is not usable
    max_tokens: int | None
    present: bool
    location: Path | None
    source: str  # "hub repo@revision" for registry models, "local" otherwise
    damaged: tuple[str, ...] = ()  # files whose size is not the manifest's (a download's)
    problem: str | None = None  # why the directory found here is no model to use (not present)
    dim_from: str | None = None  # where `dim` was read when the ONNX file does not say: config.json
    reranker: bool = False  # a cross-encoder's directory: scores, no vectors


def list_models(location: ModelLocation) -> list[ModelRow]:
    """Known models with where each is found, then other model directories on the search path,
    those that cannot be used too (a file missing, a config that cannot be read), with why."""
    rows = [_known_row(spec, location) for spec in known_models()]
    seen = set(REGISTRY)
    for base in location.path:
        for candidate in _subdirs(base):
            if candidate.name in seen or not _holds_model_files(candidate):
                continue
            seen.add(candidate.name)
            rows.append(_directory_row(candidate))
    return rows


def _known_row(spec: ModelSpec, location: ModelLocation) -> ModelRow:
    """A built-in model: where it is, or why the directory of its name is not usable (a file
    missing; a model of other dimensions, which Embedder.load refuses too)."""
    problem = None
    found: Path | None
    try:
        found = location.locate(spec.name)
    except exceptions.ModelNotFound:
        found = next(iter(location.incomplete(spec.name)), None)
        if found is not None:
            problem = f"{' and '.join(_missing(found))} missing"
    else:
        declared = _declared(found)
        if declared is not None and declared[0] not in (None, spec.dim):
            problem = f"its ONNX file produces {declared[0]} dimensions, not {spec.dim}"
    return ModelRow(
        name=spec.name,
        dim=spec.dim,
        pooling=spec.pooling,
        max_tokens=spec.max_tokens,
        present=found is not None and problem is None,
        location=found,
        source=f"{spec.repo_id}@{spec.revision[:12]}",
        damaged=tuple(Manifest.read(found, spec).damaged(found, deep=False))
        if found is not None and problem is None
        else (),
        problem=problem,
    )


def _directory_row(path: Path) -> ModelRow:
    """A directory on the search path: its dimensions as its ONNX file declares them
    (config.json's hidden_size may say another: a model's projection, or a wrong copy), else
    config.json's, saying so; or why it is not usable."""
    unusable = ModelRow(path.name, None, "-", None, False, path, "local")
    missing = _missing(path)
    if missing:
        return dataclasses.replace(unusable, problem=f"{' and '.join(missing)} missing")
    try:
        info = ModelDir.read(path)
    except exceptions.ModelError as exc:
        return dataclasses.replace(unusable, problem=str(exc).replace(f"{path}{os.sep}", ""))
    dim, reranker = _declared(path) or (None, False)
    return ModelRow(
        name=path.name,
        dim=dim or info.hidden_size,
        pooling="-" if reranker else info.pooling,
        max_tokens=info.max_tokens,
        present=True,
        location=path,
        source="local",
        dim_from="config.json" if dim is None and info.hidden_size and not reranker else None,
        reranker=reranker,
    )


def _declared(path: Path) -> tuple[int | None, bool] | None:
    """What the ONNX file of model directory `path` declares: the dimensions of its vectors
    (None: not a number there), and whether it is a cross-encoder's (no hidden states, a
    (pairs, 1) output); None when the file cannot be read as ONNX."""
    model_file = _first_file(path, (*ONNX_FP32, *ONNX_INT8))
    shapes = onnx_outputs.outputs(model_file) if model_file is not None else None
    if shapes is None:
        return None
    dim = onnx_outputs.hidden_dim(shapes)
    return dim, dim is None and any(shape[-1:] == (1,) for shape in shapes.values())


def _missing(path: Path) -> list[str]:
    """What `path` lacks to be a model directory (is_model_dir())."""
    return [
        name
        for name, present in (
            (
                "model.onnx (or onnx/model.onnx)",
                _first_file(path, (*ONNX_FP32, *ONNX_INT8)) is not None,
            ),
            ("tokenizer.json", (path / "tokenizer.json").is_file()),
        )
        if not present
    ]


def _holds_model_files(path: Path) -> bool:
    """A directory meant as a model's, usable or not: one of a model directory's files in it
    (another folder on the search path, or a hidden one such as a download's staging, is not)."""
    return not path.name.startswith(".") and any(
        (path / f).exists() for f in ("tokenizer.json", "config.json", "onnx", *ONNX_FP32)
    )


def _subdirs(base: Path) -> Iterator[Path]:
    try:
        yield from sorted(p for p in base.iterdir() if p.is_dir())
    except OSError:
        return
