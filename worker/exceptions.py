"""The one exception root of embed-worker and its families.

Every error the package raises on purpose is an `EmbedWorkerError`; its default message is the
class docstring, so `raise ModelNotFound()` still says something useful. psycopg errors are
translated into `DatabaseError` at a single boundary (`worker.db`).
"""

from __future__ import annotations


class EmbedWorkerError(Exception):
    """embed-worker failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(EmbedWorkerError):
    """The configuration is invalid."""


class ModelError(EmbedWorkerError):
    """The embedding model could not be loaded or run."""


class ModelNotFound(ModelError):
    """The embedding model is not present locally."""


class DownloadError(ModelError):
    """The model download failed."""


class DatabaseError(EmbedWorkerError):
    """A database operation failed."""


class ConnectionLost(DatabaseError):
    """The database connection was lost."""


class TargetError(EmbedWorkerError):
    """A watched table (target) is misconfigured."""


class TargetUnavailable(DatabaseError):
    """A watched table cannot be served as it is now: the functions through which the worker
    reads and writes it cannot run as its owner, or it has FORCE ROW LEVEL SECURITY. Its jobs
    wait (deferred), spending no attempt."""
