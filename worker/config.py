"""Settings: every knob of the worker, read from the environment and overridden by CLI flags.

This is the one place that reads our environment variables: each setting has one (the table in
docs/configuration.md lists them all, a test keeps it equal to this class), and CLI flags are
applied here, never written back into the environment (how: worker/environment.py). Values are
validated here, once, against the bounds below, with errors that name the variable. The rest of
the package receives what it uses from a Settings: `model_location` (where model names
resolve), `downloads` (whether and from where a missing model is fetched), `threads`,
`default_model(...)`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, TypeVar

from worker import conninfo, environment
from worker.environment import FromEnvironment
from worker.models import files
from worker.models.catalog import DEFAULT_MODEL, Variant
from worker.models.download import DownloadPolicy
from worker.models.files import DEFAULT_CACHE_DIR, ModelLocation
from worker.models.remote import keys
from worker.secret import Secret

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from worker.models.loaded import LoadedModels

_LISTEN = ("auto", "true", "false")  # EMBED_LISTEN: still accepted, no longer used
QUEUE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,46}$")  # what pgmq accepts as a table suffix
MIN_PARSE_MEMORY_MB = 16
# EMBED_HTTP_MAX_BODY's floor: one request of a short question or job takes a few hundred bytes
# of JSON; below this, every real POST would be refused 413.
MIN_HTTP_BODY = 1024
# A Postgres integer's largest value: what our SQL takes counts, sizes and times as (a batch's
# keys, a lease's seconds, lock_timeout's milliseconds); a larger setting reached the database
# as a bigint no function of ours takes, or overflowed there.
PG_INTEGER_MAX = 2_147_483_647
# The longest a number of seconds may be (24.8 days): a Postgres timeout in milliseconds holds no
# more (the owner code's statement_timeout, a wait's poll), and past about 9.2e9 s Python's own
# waits (threading.Event.wait, select, a socket's timeout) raise OverflowError: EMBED_POLL_SECONDS
# or EMBED_HTTP_TIMEOUT_SECONDS of 1e300 passed every check and stopped a thread.
SECONDS_MAX = PG_INTEGER_MAX // 1000
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")  # EMBED_LOG_LEVEL, any case


G = TypeVar("G", bound="DataclassInstance")  # a group of settings (Settings.group)


@dataclass(frozen=True)
class Settings(FromEnvironment):
    """Worker configuration. Field metadata `env` names the environment variable."""

    database_url: str | None = field(default=None, metadata={"env": "DATABASE_URL"})
    # None: the database's default model (see default_model()).
    model: str | None = field(default=None, metadata={"env": "EMBED_MODEL"})
    model_variant: Variant = field(default="fp32", metadata={"env": "EMBED_MODEL_VARIANT"})
    # Colon-separated directories holding model directories, searched before the cache.
    model_path: str | None = field(default=None, metadata={"env": files.MODEL_PATH})
    cache_dir: str = field(default=DEFAULT_CACHE_DIR, metadata={"env": files.CACHE_DIR})
    offline: bool = field(default=False, metadata={"env": "EMBED_OFFLINE"})
    # huggingface_hub's own switches, read here too so that *we* decide whether to download.
    hf_hub_offline: bool = field(default=False, metadata={"env": "HF_HUB_OFFLINE"})
    hf_endpoint: str | None = field(default=None, metadata={"env": "HF_ENDPOINT"})
    queue: str = field(default="embedding_jobs", metadata={"env": "EMBED_QUEUE"})
    batch_size: int = field(default=128, metadata={"env": "EMBED_BATCH_SIZE"})
    threads: int | None = field(default=None, metadata={"env": "EMBED_THREADS"})
    vt_seconds: int = field(default=30, metadata={"env": "EMBED_VT_SECONDS"})
    max_attempts: int = field(default=5, metadata={"env": "EMBED_MAX_ATTEMPTS"})
    backoff_base_seconds: float = field(default=5.0, metadata={"env": "EMBED_BACKOFF_BASE_SECONDS"})
    backoff_max_seconds: float = field(default=900.0, metadata={"env": "EMBED_BACKOFF_MAX_SECONDS"})
    poll_seconds: float = field(default=5.0, metadata={"env": "EMBED_POLL_SECONDS"})
    # The longest any statement of ours waits for a lock (ms; 0: as the role and database say).
    # A row, table or registration another session holds longer waits for a later batch.
    lock_timeout_ms: int = field(default=500, metadata={"env": "EMBED_LOCK_TIMEOUT_MS"})
    # What sits between the worker and the database: `session` (a direct connection, or a
    # pooler in session mode: each client connection keeps one server session) or
    # `transaction` (a pooler in transaction mode, PgBouncer's or Supavisor's port 6543: each
    # transaction may run in another server session, so each resets the one it runs in and
    # sets the worker's settings for itself alone; docs/poolers.md).
    pool_mode: str = field(default="session", metadata={"env": "EMBED_POOL_MODE"})
    # A worker's session is replaced once it served this many watched tables (sessions.py says
    # why: memory); 0: never.
    session_max_tables: int = field(default=100, metadata={"env": "EMBED_SESSION_MAX_TABLES"})
    # The longest a statement that runs a table owner's code (its content function, its
    # triggers on our writes) may run, plus OWNER_CODE_MS_PER_ROW for each row or chunk it
    # reads or writes; past it, only that target's rows wait or fail.
    owner_code_timeout_seconds: float = field(
        default=1.0, metadata={"env": "EMBED_OWNER_CODE_TIMEOUT_SECONDS"}
    )
    # Chunked targets: tokens of new chunks embedded per batch; a longer document is embedded
    # and committed a piece of this size at a time (worker/pipeline/pieces.py).
    piece_tokens: int = field(default=4096, metadata={"env": "EMBED_PIECE_TOKENS"})
    # Chunked targets: a document longer than this (UTF-8 bytes) fails at once; 0: no ceiling.
    max_document_bytes: int = field(
        default=16_777_216, metadata={"env": "EMBED_MAX_DOCUMENT_BYTES"}
    )
    # Documents are parsed in processes of their own (worker/pipeline/parsing/), each parse
    # within a wall time, CPU time (both also bounded by the input's size) and memory budget.
    parse_timeout_seconds: float = field(
        default=30.0, metadata={"env": "EMBED_PARSE_TIMEOUT_SECONDS"}
    )
    parse_cpu_seconds: int = field(default=20, metadata={"env": "EMBED_PARSE_CPU_SECONDS"})
    parse_memory_mb: int = field(default=96, metadata={"env": "EMBED_PARSE_MEMORY_MB"})
    parse_processes: int = field(default=2, metadata={"env": "EMBED_PARSE_PROCESSES"})
    # `doctor` warns when a watched table's last verifying pass (sweep(verify => true)) finished
    # longer ago than this, or never: 8 days, a weekly pass with a day to finish.
    verify_max_age_seconds: float = field(
        default=691_200.0, metadata={"env": "EMBED_VERIFY_MAX_AGE_SECONDS"}
    )
    # False: the worker leases nothing itself; jobs arrive by POST /functions/v1/embed only.
    pull: bool = field(default=True, metadata={"env": "EMBED_PULL"})
    # No longer needed, accepted and ignored: the worker never listens (worker/process/wakeups.py).
    listen: str = field(default="auto", metadata={"env": "EMBED_LISTEN"})
    grace_seconds: float = field(default=25.0, metadata={"env": "EMBED_GRACE_SECONDS"})
    http_port: int | None = field(default=None, metadata={"env": "EMBED_HTTP_PORT"})
    http_host: str = field(default="127.0.0.1", metadata={"env": "EMBED_HTTP_HOST"})
    http_token: str | None = field(default=None, metadata={"env": "EMBED_HTTP_TOKEN"})
    http_max_body: int = field(default=1_048_576, metadata={"env": "EMBED_HTTP_MAX_BODY"})
    # Seconds a connection may stay silent (slow-loris), and requests served at once.
    http_timeout_seconds: float = field(
        default=30.0, metadata={"env": "EMBED_HTTP_TIMEOUT_SECONDS"}
    )
    http_max_connections: int = field(default=16, metadata={"env": "EMBED_HTTP_MAX_CONNECTIONS"})
    # Seconds a request line and headers may take in all, from their first byte (a head sent a
    # byte at a time); connections waiting for a request at once (idle or mid-head).
    http_head_timeout_seconds: float = field(
        default=10.0, metadata={"env": "EMBED_HTTP_HEAD_TIMEOUT_SECONDS"}
    )
    http_max_waiting_connections: int = field(
        default=256, metadata={"env": "EMBED_HTTP_MAX_WAITING_CONNECTIONS"}
    )
    # Questions (POST /search, POST /embed) to one model embedded together: at most this many
    # texts per call, and the longest a question waits for others while others are about.
    query_batch_size: int = field(default=32, metadata={"env": "EMBED_QUERY_BATCH_SIZE"})
    query_batch_wait_ms: float = field(default=1.0, metadata={"env": "EMBED_QUERY_BATCH_WAIT_MS"})
    # POST /search's connections: a search holds one only while its SQL runs.
    search_pool_size: int = field(default=8, metadata={"env": "EMBED_SEARCH_POOL_SIZE"})
    # In a process that also serves HTTP, questions go first (worker/models/priority.py): the
    # pipeline's inference calls yield to questions'. Above 0, the pipeline's embedding also
    # runs at this nice value on an inference session of its own (more memory).
    backlog_nice: int = field(default=0, metadata={"env": "EMBED_BACKLOG_NICE"})
    # POST routes on a non-loopback address without EMBED_HTTP_TOKEN need this explicit yes.
    http_allow_unauthenticated: bool = field(
        default=False, metadata={"env": "EMBED_HTTP_ALLOW_UNAUTHENTICATED"}
    )
    # The role POST /search searches as (its SELECT rights and row-level security decide what it
    # sees); unset: the worker's own connection (docs/http.md#post-search).
    search_database_url: str | None = field(
        default=None, metadata={"env": "EMBED_SEARCH_DATABASE_URL"}
    )
    # API keys of remote models (worker/models/remote/): a model row names its key
    # (`credential`), never holds it. A directory with one file per credential name (a mounted
    # Kubernetes secret, systemd's $CREDENTIALS_DIRECTORY), then the providers' own variables.
    api_key_dir: str | None = field(default=None, metadata={"env": keys.KEY_DIR})
    openai_api_key: Secret | None = field(default=None, metadata={"env": keys.OPENAI_KEY})
    hf_token: Secret | None = field(default=None, metadata={"env": keys.HF_KEY})
    # Remote rerankers' keys (embeddings.register_reranker()), found the same way.
    cohere_api_key: Secret | None = field(default=None, metadata={"env": keys.COHERE_KEY})
    jina_api_key: Secret | None = field(default=None, metadata={"env": keys.JINA_KEY})
    voyage_api_key: Secret | None = field(default=None, metadata={"env": keys.VOYAGE_KEY})
    log_format: str = field(default="text", metadata={"env": "EMBED_LOG_FORMAT"})
    log_level: str = field(default="INFO", metadata={"env": "EMBED_LOG_LEVEL"})
    devdb_port: int = field(default=54329, metadata={"env": "DEVDB_PORT"})

    @property
    def dsn(self) -> str:
        """The database: DATABASE_URL, else libpq's PG* variables, else the `make db` cluster."""

        return conninfo.resolve_dsn(self.database_url, devdb_port=self.devdb_port)

    @property
    def per_transaction(self) -> bool:
        """Whether the worker's connections reach the database through a transaction pooler
        (EMBED_POOL_MODE=transaction): worker/session_guard.py, per_transaction."""
        return self.pool_mode == "transaction"

    @property
    def model_location(self) -> ModelLocation:
        """Where model names resolve: EMBED_MODEL_PATH's directories, then EMBED_CACHE_DIR."""
        return ModelLocation.of(self.model_path, self.cache_dir)

    @property
    def downloads(self) -> DownloadPolicy:
        """Whether a missing registry model is downloaded on first use, and from where."""
        off_by = "EMBED_OFFLINE" if self.offline else None
        if off_by is None and self.hf_hub_offline:
            off_by = "HF_HUB_OFFLINE"
        if off_by is None:
            return DownloadPolicy(endpoint=self.hf_endpoint)
        # Messages say the setting as the operator wrote it (EMBED_OFFLINE=yes): the process's
        # value when it is the one that turned downloads off, else 1 (set another way).
        raw = os.environ.get(off_by, "").strip()
        value = raw if environment.is_true(raw) else "1"
        return DownloadPolicy(off_by=off_by, endpoint=self.hf_endpoint, off_value=value)

    def api_key(self, credential: str) -> tuple[Secret | None, str]:
        """The key of `credential` (a model's or a reranker's row's `credential`) and where it
        came from, never the value (worker/models/remote/keys.py: find_key)."""
        return keys.find_key(
            credential,
            key_dir=self.api_key_dir,
            variables={
                keys.OPENAI_KEY: self.openai_api_key,
                keys.HF_KEY: self.hf_token,
                keys.COHERE_KEY: self.cohere_api_key,
                keys.JINA_KEY: self.jina_api_key,
                keys.VOYAGE_KEY: self.voyage_api_key,
            },
        )

    def loaded_models(self, *, retry_after: float = 30.0) -> LoadedModels:
        """The models as these settings find and load them (where names resolve, the variant,
        threads, downloads, remote models' keys): the worker's, the search service's and the
        commands' alike. `retry_after`: how long a model that failed to load waits before it is
        tried again (0 for a command, which runs once)."""
        from worker.models.loaded import LoadedModels  # (onnxruntime: only once models load)

        return LoadedModels(
            variant=self.model_variant,
            threads=self.threads,
            location=self.model_location,
            downloads=self.downloads,
            api_key=self.api_key,
            retry_after=retry_after,
        )

    def group(self, kind: type[G], prefix: str) -> G:
        """`kind` (a dataclass) from the settings named `prefix` and each of its fields, as
        the part of the worker that takes that group of settings sees them (HTTP limits,
        parse budgets): one mapping for every group, no field forgotten on the way."""
        return kind(**{f.name: getattr(self, prefix + f.name) for f in fields(kind)})

    def default_model(self, database_default: str | None) -> str:
        """The model used when none is named (`embed`, POST /embed, readiness, doctor):
        EMBED_MODEL when set; else the database's default (`embeddings.default_model()`, the
        model watch() uses when none is named), passed in by callers that reached a database;
        else gte-small."""
        return self.model or database_default or DEFAULT_MODEL

    def problems(self) -> Iterator[tuple[str, str]]:
        return _problems(self)


# The bounds Settings.validated() holds every setting to, each rule a kind of bound.
_CHOICES = (
    ("model_variant", ("fp32", "int8")),
    ("log_format", ("text", "json")),
    ("listen", _LISTEN),
    ("pool_mode", ("session", "transaction")),
)
_AT_LEAST = (  # (name, lowest, why that lowest); None (unset) passes
    ("batch_size", 1, ""),
    ("vt_seconds", 3, "leases are renewed every third of it"),
    ("max_attempts", 1, ""),
    ("http_max_connections", 1, ""),
    ("http_max_waiting_connections", 1, ""),
    ("http_max_body", MIN_HTTP_BODY, "a POST body must hold a whole request: a question, a job"),
    ("threads", 1, ""),
    ("piece_tokens", 1, ""),
    ("grace_seconds", 0, ""),
    ("max_document_bytes", 0, ""),  # 0: no ceiling
    ("parse_cpu_seconds", 1, ""),
    ("parse_processes", 1, ""),
    ("parse_memory_mb", MIN_PARSE_MEMORY_MB, "a parse process's libraries need it"),
    ("query_batch_size", 1, ""),
    ("search_pool_size", 1, ""),
    ("lock_timeout_ms", 0, ""),  # 0: the role's and database's
    ("session_max_tables", 0, ""),  # 0: never replaced
)
_AT_MOST_INTEGER = (  # counts, sizes and times that mean nothing past PG_INTEGER_MAX
    "batch_size",
    "vt_seconds",
    "max_attempts",
    "threads",
    "piece_tokens",
    "max_document_bytes",
    "parse_cpu_seconds",
    "parse_processes",
    "parse_memory_mb",
    "query_batch_size",
    "search_pool_size",
    "lock_timeout_ms",
    "session_max_tables",
)
_POSITIVE = (
    "backoff_base_seconds",
    "backoff_max_seconds",
    "poll_seconds",
    "http_timeout_seconds",
    "http_head_timeout_seconds",
    "verify_max_age_seconds",
    "parse_timeout_seconds",
    "owner_code_timeout_seconds",
)
_AT_MOST_SECONDS = (  # (name, highest): every setting in seconds, each finite already
    ("backoff_base_seconds", SECONDS_MAX),
    ("backoff_max_seconds", SECONDS_MAX),
    ("poll_seconds", SECONDS_MAX),
    ("owner_code_timeout_seconds", SECONDS_MAX),
    ("parse_timeout_seconds", SECONDS_MAX),
    ("grace_seconds", SECONDS_MAX),
    ("http_timeout_seconds", SECONDS_MAX),
    ("http_head_timeout_seconds", SECONDS_MAX),
    # (an age `doctor` compares, never waited for: a verification every year is an age too)
    ("verify_max_age_seconds", PG_INTEGER_MAX),
)
_RANGES = (  # (name, lowest, highest, what a value must be)
    ("http_port", 0, 65535, "a TCP port (0 picks a free one)"),
    ("devdb_port", 1, 65535, "a TCP port"),
    ("backlog_nice", 0, 19, "a nice value from 0 to 19"),
    ("query_batch_wait_ms", 0, 1000, "from 0 to 1000 (milliseconds)"),
)


def _problems(settings: Settings) -> Iterator[tuple[str, str]]:
    """Each setting out of its bounds, and what is wrong with it."""
    for name, allowed in _CHOICES:
        if getattr(settings, name) not in allowed:
            expected = ", ".join(allowed[:-1]) + " or " + allowed[-1]
            yield name, f"expected {expected}, got {getattr(settings, name)!r}"
    if settings.log_level.upper() not in LOG_LEVELS:
        expected = ", ".join(LOG_LEVELS[:-1]) + " or " + LOG_LEVELS[-1]
        yield "log_level", f"expected {expected}, got {settings.log_level!r}"
    if not QUEUE_NAME.match(settings.queue):
        yield "queue", f"{settings.queue!r} is not a valid pgmq queue name"
    yield from _numbers(settings)
    if not settings.pull and settings.http_port is None:
        yield (
            "pull",
            (
                "false (push only) needs EMBED_HTTP_PORT: jobs would arrive only through "
                "POST /functions/v1/embed"
            ),
        )


def _numbers(settings: Settings) -> Iterator[tuple[str, str]]:
    """Each number out of its bounds, and what is wrong with it."""
    for name, lowest, why in _AT_LEAST:
        value = getattr(settings, name)
        if value is not None and value < lowest:
            bound = f"must be at least {lowest}" + (f" ({why})" if why else "")
            yield name, "must not be negative" if lowest == 0 else bound
    for name in _AT_MOST_INTEGER:
        value = getattr(settings, name)
        if value is not None and value > PG_INTEGER_MAX:
            yield name, f"must be at most {PG_INTEGER_MAX}"
    for name in _POSITIVE:
        if getattr(settings, name) <= 0:
            yield name, "must be positive"
    for name, highest in _AT_MOST_SECONDS:
        if getattr(settings, name) > highest:
            yield name, f"must be at most {highest} seconds"
    for name, lowest, highest, what in _RANGES:
        value = getattr(settings, name)
        if value is not None and not lowest <= value <= highest:
            yield name, f"must be {what}"


def model_location_from_env(env: Mapping[str, str] | None = None) -> ModelLocation:
    """Where model names resolve by the environment alone (EMBED_MODEL_PATH, EMBED_CACHE_DIR):
    the default of the pinned `from worker.embedder import Embedder; Embedder.load(name)`,
    which has no Settings to ask. Reads only those two variables, so an unrelated bad one
    cannot make loading a model fail."""
    env = os.environ if env is None else env
    return ModelLocation.of(
        env.get(files.MODEL_PATH, "").strip() or None,
        env.get(files.CACHE_DIR, "").strip() or DEFAULT_CACHE_DIR,
    )


def api_key_from_env(
    credential: str, env: Mapping[str, str] | None = None
) -> tuple[Secret | None, str]:
    """Settings.api_key by the environment alone (EMBED_API_KEY_DIR and the providers' key
    variables), for code with no Settings at hand; reads only those variables, so an unrelated
    bad one cannot make a request fail."""
    env = os.environ if env is None else env
    variables = {
        name: Secret(env[name].strip())
        for name in keys.key_variables()
        if env.get(name, "").strip()
    }
    key_dir = env.get(keys.KEY_DIR, "").strip() or None
    return keys.find_key(credential, key_dir=key_dir, variables=variables)
