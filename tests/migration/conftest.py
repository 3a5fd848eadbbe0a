"""Fixtures the migration tests share with the integration tests: the tiny random-weight models
(tiny-a, tiny-b) the squashed-revision fixture's targets use, and the session's loaded models."""

from __future__ import annotations

from tests.integration.conftest import (
    embedders,
    generated_model_path,
    model_path,
    tiny_model_paths,
)

__all__ = ["embedders", "generated_model_path", "model_path", "tiny_model_paths"]
