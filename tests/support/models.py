"""Where the real models for tests are (../shared/models, or EMBED_TEST_MODELS)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.cluster import REPO

MINILM = "all-MiniLM-L6-v2"


def shared_models_dir() -> Path:
    return Path(os.environ.get("EMBED_TEST_MODELS") or REPO.parent / "shared" / "models")


def require_minilm() -> Path:
    """The real all-MiniLM-L6-v2 directory, or skip with the reason."""
    path = shared_models_dir() / MINILM
    if not (path / "model.onnx").is_file():
        pytest.skip(f"real model weights not found at {path} (set EMBED_TEST_MODELS)")
    return path
