"""The one exception root of embed-worker and its families.

Every error the package raises on purpose is an `EmbedWorkerError`; its default message is the
class docstring, so `raise ModelNotFound()` still says something useful. psycopg errors are
translated into `DatabaseError` at a single boundary (`worker.db`).
"""

from __future__ import annotations


class EmbedWorkerError(Exception):
    """embed-worker failed."""

    # Set where the failure was logged as it happened (a model's load: worker/models/loaded.py),
    # so that a command that ends on it does not log the same failure a second time.
    logged: bool = False

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(EmbedWorkerError):
    """The configuration is invalid."""


class UnusableEncoding(ConfigError):
    """The database's encoding is SQL_ASCII (bytes, no characters), which embed-worker cannot
    use: `problem` says so, `fix` what to do (doctor shows them apart)."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}; {fix}")
        self.problem, self.fix = problem, fix


class ModelError(EmbedWorkerError):
    """The embedding model could not be loaded or run."""


class ModelNotFound(ModelError):
    """The embedding model is not present locally."""


class DownloadError(ModelError):
    """The model download failed."""


class CacheNotWritable(DownloadError):
    """The model cache (EMBED_CACHE_DIR, --cache-dir) cannot be written: a configuration error
    for a command (exit 2); for a worker, the reason its model's jobs are held."""


class ModelDownloading(ModelError):
    """The model is being downloaded in the background (worker/models/loaded.py): its targets'
    jobs are held until it loads."""


class ModelNotDownloaded(ModelError):
    """A registry model that is not on this machine was asked for where nothing may start its
    download (an HTTP request: worker/models/loaded.py, `get(..., download=False)`)."""


class DatabaseError(EmbedWorkerError):
    """A database operation failed."""


class SchemaMismatch(DatabaseError):
    """The database's schema is not the one this package's code calls (not installed, of an
    older release, of a newer one): a command stops before it runs a statement of the schema,
    saying what to run (exit 1, as `run --once`); a waiting worker's POST routes that use the
    schema answer 503 with it, to be asked again in `retry_after` seconds (the worker's
    start-up looks at the schema again every 10 s)."""

    retry_after = 10


class RegistryUnread(DatabaseError):
    """A worker has not read the database's registry yet (start-up waits for the database or a
    queue, or has not looked yet): what only the registry says (the database's default model, a
    model registered there) is not known, so POST /embed asked for it answers 503 with what
    start-up waits for, to be asked again in `retry_after` seconds."""

    retry_after = 10


class ConnectionLost(DatabaseError):
    """The database connection was lost."""


class AuthenticationFailed(ConnectionLost):
    """The database refused the password: retried as a lost connection (it may be changed while
    the worker waits), but reported as what it is."""


class ServerBusy(ConnectionLost):
    """The server answered and turned the connection away for now: its connection slots are
    full (SQLSTATE 53300), or it is starting up, shutting down or in recovery (57P03). An outage
    that ends by itself, but knocking more often only adds to the load (worker/outages.py)."""


class SessionTimedOut(ConnectionLost):
    """The session's own statement_timeout (SESSION_TIMEOUT) cancelled the statements that set
    it up: retried as a lost connection (the setting may be changed
    while the worker waits), but reported as what it is and how to mend it."""


class Contention(DatabaseError):
    """Another session's work stood in the way of a statement of ours, which Postgres ended:
    nothing was wrong with it. Tried again (the writer's whole transaction, the fetcher's read)."""


class LockUnavailable(Contention):
    """Another session held a lock for longer than our lock_timeout (EMBED_LOCK_TIMEOUT_MS):
    nothing we run waits longer. What waited is tried again later, spending no attempt."""


class TransactionConflict(Contention):
    """Postgres rolled our transaction back for a concurrent one's sake: a deadlock (40P01), or
    a serialization failure (40001). Our sessions run at READ COMMITTED, where the latter does
    not happen to our own statements; a table owner's code may still raise either."""


class DatabaseReadOnly(ConnectionLost):
    """The database takes no writes: a hot standby, or read-only transactions by default. The
    worker's sessions wait it out as a lost connection (a failover's new primary soon answers at
    the same address), reporting it as what it is."""


class ReadOnlyTransaction(DatabaseError):
    """A write was refused in a read-only transaction (25006): the database may have stopped
    taking writes (the worker's threads drop their connection, and sessions.Session asks the server
    before using a new one)."""


# Whose statement_timeout cancels our statements when we set none, and what gives the worker's
# sessions the time their statements need (it bounds its own waits).
SESSION_TIMEOUT = "statement_timeout (the database's, the role's or PGOPTIONS')"
TIMEOUT_FIX = (
    "the worker bounds its own waits (EMBED_LOCK_TIMEOUT_MS, EMBED_OWNER_CODE_TIMEOUT_SECONDS):"
    " give its sessions a longer one, or none: PGOPTIONS='-c statement_timeout=0' in its"
    " environment, or ALTER ROLE <its role> SET statement_timeout = 0"
)


class StatementTimeout(DatabaseError):
    """A statement ran past its statement_timeout (a table owner's code past
    EMBED_OWNER_CODE_TIMEOUT_SECONDS), or was cancelled."""

    @property
    def first_line(self) -> str:
        """The server's message alone, without the statements it was inside (CONTEXT: pages
        of our SQL)."""
        text = str(self).strip()
        return text.splitlines()[0] if text else "canceled"


class TargetError(EmbedWorkerError):
    """A watched table (target) is misconfigured."""


class TargetNotFound(TargetError, ConfigError):
    """No watched table by that name: the table is not there, or not watched (with that
    column). Bad usage (exit 2), as `status TABLE` says it; 404 over HTTP."""


class TargetUnavailable(DatabaseError):
    """A watched table cannot be served as it is now: the functions through which the worker
    reads and writes it cannot run as its owner, or it has FORCE ROW LEVEL SECURITY. Its jobs
    wait (deferred), spending no attempt."""


class ProviderError(ModelError):
    """A remote model's provider (worker/models/remote/) could not embed the texts, for a
    reason that is not the texts': the rows wait, spending no attempt."""

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # seconds until it is worth asking again, if known


class ProviderUnavailable(ProviderError):
    """The provider is down, slow, throttling us (429) or answering garbage: the rows wait
    until it recovers (its circuit breaker says when to try again)."""


class ProviderRefused(ProviderError):
    """The provider refuses the model's configuration (the key, the model, the dimensions):
    the target waits until its registration or the key is fixed."""


class InputRejected(ModelError):
    """The provider refused these inputs themselves (HTTP 400, 413, 422): the row fails like a
    text the local model fails on, and is retried, then dead-lettered."""


class DocumentError(EmbedWorkerError):
    """A document could not be read as text (worker/pipeline/documents/): corrupt, encrypted,
    of an unknown format, or not valid UTF-8. The same bytes fail again: not worth a retry."""

    def __init__(self, format: str, reason: str) -> None:
        super().__init__(f"{format} document: {reason}")
        self.format = format  # 'pdf', 'docx', 'html', 'markdown', 'text', or 'unknown'
        self.reason = reason


class DocumentTooLarge(DocumentError):
    """The text extracted from a document is over EMBED_MAX_DOCUMENT_BYTES."""


class ParseFailed(EmbedWorkerError):
    """A document's parse ran past its budget (wall time, CPU, memory) or its process crashed
    (worker/pipeline/parsing/). Unlike a DocumentError it may be the machine's load: the row
    fails this attempt, and is retried, then dead-lettered, as any row is."""

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause  # 'time', 'cpu', 'memory' or 'crash' (the metric's label)
