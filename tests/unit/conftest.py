"""Fixtures of the embedder and model tests: the shared local models and generated ones.

The real models live in `<repo root>/../shared/models` (override with `EMBED_TEST_MODELS`); tests
that need one skip, saying so, when it is absent. Generated random-weight models are built once
and kept in pytest's cache directory (`.pytest_cache`, git-ignored).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import modelgen
from tests.support.models import require_gte_tokenizer, shared_models_dir
from tests.support.remote_clients import close_all
from worker.models.embedder import Embedder

EMBED_ENV = (
    "EMBED_MODEL_PATH",
    "EMBED_CACHE_DIR",
    "EMBED_THREADS",
    "EMBED_MODEL",
    "HF_HUB_OFFLINE",
)


@pytest.fixture(autouse=True)
def _close_remote_clients() -> Iterator[None]:
    """The remote models and rerankers a test made (remote_clients.closed_after_test)."""
    yield
    close_all()


def _shared_model(name: str) -> Path:
    path = shared_models_dir() / name
    if not (path / "tokenizer.json").is_file():
        pytest.skip(f"{path} is absent: `make test-models` builds it (or set EMBED_TEST_MODELS)")
    return path


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 (fp32 ONNX, real weights)."""
    path = _shared_model("all-MiniLM-L6-v2")
    if not (path / "model.onnx").is_file():
        pytest.skip(f"{path}/model.onnx is absent")
    return path


@pytest.fixture(scope="session")
def gte_tokenizer_dir() -> Path:
    """The real gte-small tokenizer and config, without weights."""
    return require_gte_tokenizer()


@pytest.fixture(scope="session")
def minilm(minilm_dir: Path) -> Embedder:
    return Embedder.load(minilm_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(generated_models_root: Path, gte_tokenizer_dir: Path) -> Path:
    """2 layers, hidden 32, 512 positions, the real gte-small tokenizer; random weights."""
    return modelgen.cached_model_dir(
        generated_models_root, name="tiny-bert", tokenizer_dir=gte_tokenizer_dir, **modelgen.TINY
    )


@pytest.fixture(scope="session")
def gte_arch_dir(generated_models_root: Path, gte_tokenizer_dir: Path) -> Path:
    """gte-small's exact architecture (12 x 384, 512 positions), random weights, real tokenizer.

    The directory is named gte-small: with EMBED_MODEL_PATH set to its parent, the name
    "gte-small" loads it.
    """
    return modelgen.cached_model_dir(
        generated_models_root,
        name="gte-small",
        tokenizer_dir=gte_tokenizer_dir,
        **modelgen.GTE_SMALL,
    )


@pytest.fixture
def embed_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No EMBED_* settings from the caller's shell; the download cache in a temporary directory."""
    for name in EMBED_ENV:
        monkeypatch.delenv(name, raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("EMBED_CACHE_DIR", str(cache))
    yield cache


@pytest.fixture(scope="session")
def tiny_cross_encoder_dir(generated_models_root: Path, gte_tokenizer_dir: Path) -> Path:
    """A cross-encoder (one score per pair) of TINY's size, random weights, real tokenizer."""
    return modelgen.cached_model_dir(
        generated_models_root,
        name="tiny-rerank",
        tokenizer_dir=gte_tokenizer_dir,
        cross_encoder=True,
        **modelgen.TINY,
    )
