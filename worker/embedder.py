"""The pinned Python API: `from worker.embedder import Embedder` (docs/DESIGN: Python).

The class lives in `worker.models.embedder`, beside the rest of the model code, where it knows
nothing of the settings. This module keeps the published import path and the published default:
`Embedder.load(name)` without a location finds the model where EMBED_MODEL_PATH and
EMBED_CACHE_DIR say, as the worker and the CLI do (worker/config.py reads them). Code inside
the package imports from where the class lives, and passes its location.
"""

from __future__ import annotations

import os
from typing import Any, Self

from worker import config
from worker.models import embedder, files


class Embedder(embedder.Embedder):
    __doc__ = embedder.Embedder.__doc__

    @classmethod
    def load(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        location: files.ModelLocation | None = None,
        **options: Any,
    ) -> Self:
        """models.embedder.Embedder.load, its location by default from the environment
        (EMBED_MODEL_PATH, then EMBED_CACHE_DIR)."""
        return super().load(
            name_or_path, location=location or config.model_location_from_env(), **options
        )


__all__ = ["Embedder"]
