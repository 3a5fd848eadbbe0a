"""The pinned Python API: `from worker.embedder import Embedder` (docs/DESIGN: Python).

The class lives in `worker.models.embedder`, beside the rest of the model code; this module
keeps the published import path. Code inside the package imports from where it lives.
"""

from worker.models.embedder import Embedder

__all__ = ["Embedder"]
