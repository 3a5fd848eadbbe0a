"""A worker's start-up: waiting for the database and our schema, loading the models its targets
need, saying which targets it cannot serve, taking the held jobs of those it can, and when it
is ready (systemd, /readyz)."""

from __future__ import annotations

import difflib
import logging
import threading
from dataclasses import dataclass, field

from worker import conninfo, db, exceptions, metrics, pooler, queries, schema, sessions
from worker.config import Settings
from worker.models import catalog, files
from worker.models.loaded import LoadedModels
from worker.pipeline import provenance
from worker.pipeline.targets import TargetRegistry
from worker.process import cores, systemd
from worker.process.held import HeldJobs
from worker.target import Target

logger = logging.getLogger(__name__)

MISSING_SCHEMA = "the embeddings schema is not installed: run `embed-worker migrate`"


def startup_timeout_message(exc: exceptions.StatementTimeout) -> str:
    """A start cancelled by the session's statement_timeout: the server's first line, not the
    pages of our SQL it was inside, and how to give the worker's sessions the time they need
    (reading the targets and their problems takes longer the more tables are watched)."""
    return (
        f"{exc.first_line}, while starting: the session's {exceptions.SESSION_TIMEOUT} is shorter"
        f" than the worker's statements need; {exceptions.TIMEOUT_FIX}"
    )


def announce(settings: Settings) -> None:
    logger.info(
        "embed-worker starting: database %s, queue %s%s, model %s (%s), batch %d",
        conninfo.describe(settings.dsn),
        settings.queue,
        "" if settings.pull else " (push only: no pulling)",
        settings.model or "the database's default",
        settings.model_variant,
        settings.batch_size,
    )
    crowded = cores.warning(settings.threads)
    if crowded:
        logger.warning("%s", crowded)


class Waiting:
    """What start-up waits for, as it last looked (None: nothing, or not looked yet): `schema`,
    why the schema cannot be served (not installed, of an older or a newer release), and
    `problem`, whatever it waits for (that, or a queue no watch() made yet). /readyz names the
    problem; the POST routes that use the schema answer 503 with `schema` (worker/http/).
    `checking_pooler`: EMBED_POOL_MODE=session, and no transaction pooler seen in front yet
    (Startup.check_pool_mode): meanwhile the HTTP side makes no session of its own there
    (/readyz connects per transaction; the POST routes that use the database answer 503)."""

    def __init__(self, *, checking_pooler: bool = False) -> None:
        self.schema: str | None = None
        self.problem: str | None = None
        self.checking_pooler = checking_pooler

    def found(self, schema: str | None, problem: str | None) -> None:
        self.schema, self.problem = schema, problem


@dataclass(frozen=True, kw_only=True)
class DefaultModel:
    """The model for POST /embed when a request names none, and the one /readyz waits for:
    EMBED_MODEL, else the database's default as last read with the targets, else gte-small."""

    settings: Settings
    registry: TargetRegistry
    embedders: LoadedModels
    started: threading.Event  # connected, schema present, models tried
    ready: threading.Event = field(default_factory=threading.Event)  # ... and this one loaded

    def name(self) -> str:
        return self.settings.default_model(self.registry.database_default)

    def in_use(self) -> set[str]:
        """The models this worker is wanted for: the default, and those of its queue's targets
        (a model change's new one included), as last read."""
        targets = [t for t in self.registry.snapshot().values() if t.queue == self.settings.queue]
        return (
            {self.name()}
            | {t.model for t in targets}
            | {t.shadow_model for t in targets if t.shadow_model is not None}
        )

    def problem(self, *, download: bool) -> str | None:
        """Why the default model is not loaded (None when it is). Tries to load it, at most
        every `retry_after` seconds, so a model downloaded after startup makes the worker
        ready without a restart. The default follows the database's (set_default_model()) when
        EMBED_MODEL is unset: a new default must load before the worker says ready for it.
        `download`: whether a registry model not on disk may be fetched (the worker's start and
        its keeper, which retries a failed download); /readyz's is False: a probe never makes
        the process fetch a model."""
        if not self.started.is_set():
            return "starting (waiting for the database and the schema)"
        name = self.name()
        default = self.embedders.loaded().get(name) if self.ready.is_set() else None
        if default is None:
            try:
                default = self.embedders.get(name, download=download)
            except exceptions.ModelError as exc:
                # No default model loaded: no embed_worker_model_info (a former default's
                # labels would say it is loaded).
                metrics.MODEL.info({})
                return str(exc)
        # (set each time: a default changed back to a model loaded before is the info again)
        metrics.MODEL.info(
            {
                "name": name,
                "variant": self.settings.model_variant,
                "dimensions": str(default.dim),
                "max_tokens": str(default.max_tokens),
            }
        )
        self.ready.set()
        return None


@dataclass(frozen=True, kw_only=True)
class Startup:
    """What start-up uses, given by the runner (worker/process/runner.py)."""

    dsn: str
    queue: str  # the targets of this queue are ours
    once: bool  # a one-shot run: an unreachable database or a missing schema fails at once
    stopping: threading.Event  # stop waiting for the database
    registry: TargetRegistry
    embedders: LoadedModels
    default: DefaultModel
    started: threading.Event  # set once connected, the schema present and the models tried
    held: HeldJobs  # held jobs of the targets it can serve: taken at once, not after their wait
    lock_timeout_ms: int  # EMBED_LOCK_TIMEOUT_MS: the longest its statements wait for a lock
    per_transaction: bool  # EMBED_POOL_MODE=transaction (db.connect)
    waiting: Waiting  # what it waits for, said by /readyz and the POST routes meanwhile
    search_dsn: str | None = None  # EMBED_SEARCH_DATABASE_URL: POST /search's role's

    def run(self) -> None:
        if not self.check_pool_mode():
            return  # stopped while waiting for the database
        targets = self.connect_and_read_targets()
        if targets is None:
            return  # stopped while waiting for the database
        self.load_models(targets)
        self.release_held()

    def release_held(self) -> None:
        """Makes the held jobs of the targets this worker can serve visible now, before the
        fetcher starts (worker/process/held.py): a worker started to serve them takes them."""
        try:
            with db.connect(
                self.dsn,
                connect_timeout=5,
                lock_timeout_ms=self.lock_timeout_ms,
                per_transaction=self.per_transaction,
            ) as conn:
                self.held.release(conn)
        except exceptions.EmbedWorkerError as exc:
            logger.warning("held jobs not taken yet (the keeper tries again): %s", exc)

    def check_pool_mode(self) -> bool:
        """EMBED_POOL_MODE=session behind a transaction pooler is refused (ConfigError: exit 2),
        before any connection of ours sets a session setting there (worker/pooler.py): on a
        connection of its own, made per transaction, waiting for the database as start-up does.
        False when stopped while waiting."""
        if self.per_transaction:
            return True  # (works behind any pooler, or none)
        probe = sessions.Session(
            self.dsn,
            "startup",
            self.stopping,
            deadline=0.0 if self.once else None,
            lock_timeout_ms=self.lock_timeout_ms,
            per_transaction=True,
        )
        try:
            while not self.stopping.is_set():
                try:
                    conn = probe.get()
                    pooler.refuse(
                        conn, self.dsn, pool_mode="session", lock_timeout_ms=self.lock_timeout_ms
                    )
                    self.check_search_pool_mode()
                    self.waiting.checking_pooler = False
                    return True
                except exceptions.ConnectionLost:
                    if self.once:
                        raise
                    probe.lost()
            return False
        finally:
            probe.close()

    def check_search_pool_mode(self) -> None:
        """check_pool_mode() for EMBED_SEARCH_DATABASE_URL, which POST /search connects to, once:
        the pipeline does not wait for it (a search database that cannot be reached now leaves
        it unchecked, with a warning)."""
        if self.search_dsn is None or self.search_dsn == self.dsn:
            return
        try:
            with db.connect(
                self.search_dsn,
                connect_timeout=5,
                lock_timeout_ms=self.lock_timeout_ms,
                per_transaction=True,
            ) as conn:
                pooler.refuse(
                    conn,
                    self.search_dsn,
                    pool_mode="session",
                    lock_timeout_ms=self.lock_timeout_ms,
                    url="EMBED_SEARCH_DATABASE_URL",
                )
        except exceptions.ConfigError:
            raise
        except exceptions.EmbedWorkerError as exc:
            logger.warning(
                "EMBED_SEARCH_DATABASE_URL not reached: EMBED_POOL_MODE=session not checked"
                " against what is in front of it (docs/poolers.md): %s",
                exc,
            )

    def connect_and_read_targets(self) -> dict[int, Target] | None:
        """Waits for the database and our schema (a worker may start before `migrate` ran)."""
        # A one-shot run reports an unreachable database at once (exit 1) instead of waiting.
        deadline = 0.0 if self.once else None
        session = sessions.Session(
            self.dsn,
            "startup",
            self.stopping,
            deadline=deadline,
            lock_timeout_ms=self.lock_timeout_ms,
            per_transaction=self.per_transaction,
        )
        systemd.notify(status=f"connecting to {conninfo.describe(self.dsn)}")
        try:
            while not self.stopping.is_set():
                try:
                    conn = session.get()
                    with db.translated():
                        installed = schema.installed(conn)
                        mismatch = schema.mismatch(conn) if installed else MISSING_SCHEMA
                        problem = None if mismatch is None else str(mismatch)
                        no_queue = self.missing_queue(conn) if problem is None else None
                    self.waiting.found(problem, problem or no_queue)
                    if problem is None and no_queue is None:
                        targets = self.registry.refresh(conn)
                        self.check_configured_model(conn)
                        return targets
                except exceptions.ConnectionLost:
                    if self.once:
                        raise
                    session.lost()
                    continue
                if self.once and no_queue is not None:
                    raise exceptions.ConfigError(no_queue)  # most likely a typo: exit 2
                problem = problem or no_queue
                if self.once:
                    raise exceptions.DatabaseError(problem)
                logger.error("%s; retrying in 10 s", problem)
                systemd.notify(status=f"waiting: {problem}")
                self.stopping.wait(10)
            return None
        finally:
            session.close()

    def missing_queue(self, conn: db.Connection) -> str | None:
        """Why EMBED_QUEUE names no queue of ours (None when it names one): a lease from a queue
        no watch() made ended the fetcher with `relation "pgmq.q_..." does not exist`. A worker
        that runs on waits for it, as for the schema: it may be started before the watch()."""
        queues = [row[0] for row in conn.execute(queries.get("live_queues"))]
        if self.queue in queues:
            return None
        return (
            f"EMBED_QUEUE={self.queue} (run --queue): no queue {self.queue}; the queues are "
            f"{', '.join(queues) or 'none yet'}. The first watch() that names a queue makes it:"
            f" SELECT embeddings.watch(..., queue => '{self.queue}')"
        )

    def check_configured_model(self, conn: db.Connection) -> None:
        """EMBED_MODEL must name a model: one of the catalog's, one registered in
        embeddings.models (local or remote), or a model directory. A typo is a configuration
        error (exit 2) naming the variable and the closest name, not a model that never loads."""
        name = self.default.settings.model
        if not name or files.looks_like_path(name):
            return
        with db.translated():
            registered = {row[0] for row in conn.execute(queries.get("model_dimensions"))}
        known = sorted(set(catalog.REGISTRY) | registered)
        if name in known:
            return
        try:
            self.embedders.location.locate(name)
            return
        except exceptions.ModelNotFound:
            pass
        close = difflib.get_close_matches(name, known, n=1)
        searched = ", ".join(str(d) for d in self.embedders.location.search_dirs())
        raise exceptions.ConfigError(
            f"EMBED_MODEL={name}: no such model"
            + (f" (did you mean {close[0]}?)" if close else "")
            + f": it is not one of {', '.join(known)}, and no directory {name}/ is in"
            f" {searched}; `embed-worker model list` shows the catalog"
        )

    def load_models(self, targets: dict[int, Target]) -> None:
        """Loads the default model and those of our queue's targets; reports unservable
        targets. A registry model not on disk is downloaded in the background (a one-shot run
        waits for it): start-up goes on, its targets held until it loads (LoadedModels)."""
        ours = [t for t in targets.values() if t.queue == self.queue]
        problems: dict[int, str] = {}  # target id -> why; each reported once
        for model in sorted({self.default.name()} | {t.model for t in ours}):
            try:
                embedder = self.embedders.get(model)
            except exceptions.ModelError:
                continue  # logged; its targets are deferred until it loads
            for target in ours:
                if target.model == model and (problem := target.problem(embedder.dim)):
                    problems[target.id] = problem
        for target in ours:
            if target.id not in problems and (problem := target.problem()):
                problems[target.id] = problem
        # The new models of changes in progress: one that cannot load is then known before the
        # held jobs are taken (release_held), and the change's jobs held for it stay held.
        for model in sorted({t.shadow_model for t in ours if t.shadow_model is not None}):
            try:
                self.embedders.get(model)
            except exceptions.ModelError:
                continue  # logged; the change's jobs wait until it loads
        for problem in problems.values():
            logger.error("target not servable: %s", problem)
        provenance.check_at_startup(
            self.dsn, ours, self.embedders, per_transaction=self.per_transaction
        )
        self.started.set()
        problem = self.default.problem(download=True)
        # Ready for systemd means started: a missing model is reported, not waited for (the
        # worker loads it when it appears; /readyz says 503 until then).
        systemd.notify(
            ready=True,
            status=f"serving queue {self.queue} with {self.default.name()}"
            + (f"; not ready: {problem}" if problem else ""),
        )
