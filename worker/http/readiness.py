"""Readiness for /readyz: the database answers and takes writes, the default model is loaded,
and which targets the worker cannot serve now (their jobs are deferred, with why).

The database check is also embed_worker_database_up's one source (checked again for /metrics):
the gauge and /readyz say the same, rather than the gauge following whichever pipeline thread
last touched the database (a fetcher in its reconnect backoff kept it 0 for seconds after
/readyz was back, and a database refusing writes left it 1)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from worker import db, exceptions, metrics, outages
from worker.process import held

if TYPE_CHECKING:
    from worker.models.loaded import LoadedModels
    from worker.pipeline.targets import TargetRegistry
    from worker.process.startup import DefaultModel, Waiting


def model_named(model: str, problem: str) -> str:
    """`problem` of `model`, said with its name once: most reasons name it already ("model 'x'
    is not present", "unknown model 'x'", "model x is not downloaded"), and the name before
    them said it twice; one that does not (a directory named by its path) gets it before."""
    name = re.escape(model)
    if re.search(rf"\bmodel (?:{name}|'{name}')(?![\w.-])", problem):
        return problem
    return f"model {model}: {problem}"


class ReadinessProbe:
    """Database reachable and taking writes (checked at most once a second) and the default model
    loaded."""

    def __init__(
        self,
        dsn: str,
        queue: str,
        *,
        registry: TargetRegistry,
        embedders: LoadedModels,
        default_model: DefaultModel,
        stopped: Callable[[], bool],  # the worker's pipeline ended, or a thread of it failed
        per_transaction: bool = False,  # EMBED_POOL_MODE=transaction (db.connect)
        waiting: Waiting,  # what start-up waits for: the schema's release, a queue
    ) -> None:
        self.waiting = waiting
        self.dsn = dsn
        self.queue = queue
        self.registry = registry
        self.embedders = embedders
        self.default_model = default_model
        self.stopped = stopped
        self.per_transaction = per_transaction
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._db_error: str | None = "not checked yet"

    def unservable_targets(self) -> dict[str, str]:
        """Targets of our queue the worker cannot serve now, with why (their jobs wait)."""
        return held.unservable(self.queue, self.registry, self.embedders)

    def problems(self) -> list[str]:
        found = []
        waiting = self.waiting.problem
        # What start-up waits for, named (`migrate`, a watch()), rather than the default model's
        # "starting": no model is loaded before it.
        # (never a download: the worker's keeper retries one that failed)
        model_problem = None if waiting else self.default_model.problem(download=False)
        if waiting:
            found.append(f"starting: {waiting}")
        if model_problem:
            found.append(model_named(self.default_model.name(), model_problem))
        if self.stopped():
            found.append("worker stopped")
        db_error = self.database()
        if db_error:
            found.append(f"database: {db_error}")
        # A worker waiting for `migrate` reaches its database (database_up 1) and has loaded no
        # model yet (no model_loaded series): only this says it serves nothing.
        metrics.READY.set(0 if found else 1)
        return found

    def database(self) -> str | None:
        """Why the database is not ready (it does not answer, or takes no writes), or None;
        checked at most once a second, embed_worker_database_up set from it."""
        with self._lock:
            if time.monotonic() - self._checked_at < 1.0:
                return self._db_error
            try:
                # Per transaction until start-up saw no transaction pooler in front (Waiting):
                # nothing of this session may outlive its transactions there.
                per_transaction = self.per_transaction or self.waiting.checking_pooler
                with db.connect(
                    self.dsn, connect_timeout=2, per_transaction=per_transaction
                ) as conn:
                    read_only = db.takes_no_writes(conn)  # (and the database answers)
                self._db_error = None if read_only is None else str(read_only)
                if self._db_error is None:
                    # Ready: the pipeline's sessions waiting to reconnect retry now, rather than
                    # fetching only after the rest of their backoff (up to 45 s).
                    outages.reachable(self.dsn)
            except exceptions.EmbedWorkerError as exc:
                self._db_error = str(exc)
            self._checked_at = time.monotonic()
            metrics.DATABASE_UP.set(0 if self._db_error else 1)
            return self._db_error
