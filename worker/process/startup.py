"""A worker's start-up: waiting for the database and our schema, loading the models its targets
need, saying which targets it cannot serve, and when it is ready (systemd, /readyz)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from worker import db, exceptions, metrics, schema
from worker.pipeline import provenance
from worker.pipeline.targets import Target
from worker.process import systemd

if TYPE_CHECKING:
    from worker.process.runner import Worker

logger = logging.getLogger(__name__)

MISSING_SCHEMA = "the embeddings schema is not installed: run `embed-worker migrate`"


def start(worker: Worker) -> None:
    targets = connect_and_read_targets(worker)
    if targets is None:
        return  # stopped while waiting for the database
    metrics.DATABASE_UP.set(1)
    load_models(worker, targets)


def connect_and_read_targets(worker: Worker) -> dict[int, Target] | None:
    """Waits for the database and our schema (a worker may start before `migrate` ran)."""
    # A one-shot run reports an unreachable database at once (exit 1) instead of waiting.
    deadline = 0.0 if worker.once else None
    session = db.Session(worker.dsn, "startup", worker.stopping, deadline=deadline)
    systemd.notify(status=f"connecting to {db.describe(worker.dsn)}")
    try:
        while not worker.stopping.is_set():
            try:
                conn = session.get()
                with db.translated():
                    installed = schema.installed(conn)
                if installed:
                    return worker.registry.refresh(conn)
            except exceptions.ConnectionLost:
                if worker.once:
                    raise
                session.lost()
                continue
            if worker.once:
                raise exceptions.DatabaseError(MISSING_SCHEMA)
            logger.error("%s; retrying in 10 s", MISSING_SCHEMA)
            systemd.notify(status=f"waiting: {MISSING_SCHEMA}")
            worker.stopping.wait(10)
        return None
    finally:
        session.close()


def default_model(worker: Worker) -> str:
    """The model for POST /embed when a request names none, and the one /readyz waits for:
    EMBED_MODEL, else the database's default as last read with the targets, else gte-small."""
    return worker.settings.default_model(worker.registry.database_default)


def load_models(worker: Worker, targets: dict[int, Target]) -> None:
    """Loads the default model and those of our queue's targets; reports unservable targets."""
    ours = [t for t in targets.values() if t.queue == worker.settings.queue]
    problems: dict[int, str] = {}  # target id -> why; each reported once
    for model in sorted({default_model(worker)} | {t.model for t in ours}):
        try:
            embedder = worker.embedders.get(model)
        except exceptions.ModelError:
            continue  # logged; its targets are deferred until it loads
        for target in ours:
            if target.model == model and (problem := target.problem(embedder.dim)):
                problems[target.id] = problem
    for target in ours:
        if target.id not in problems and (problem := target.problem()):
            problems[target.id] = problem
    for problem in problems.values():
        logger.error("target not servable: %s", problem)
    provenance.check_at_startup(worker.dsn, ours, worker.embedders)
    worker.started.set()
    problem = default_model_problem(worker)
    # Ready for systemd means started: a missing model is reported, not waited for (the
    # worker loads it when it appears; /readyz says 503 until then).
    systemd.notify(
        ready=True,
        status=f"serving queue {worker.settings.queue} with {default_model(worker)}"
        + (f"; not ready: {problem}" if problem else ""),
    )


def default_model_problem(worker: Worker) -> str | None:
    """Why the default model is not loaded (None when it is). Tries to load it, at most
    every `retry_after` seconds, so a model downloaded after startup makes the worker
    ready without a restart. The default follows the database's (set_default_model()) when
    EMBED_MODEL is unset: a new default must load before the worker says ready for it."""
    if not worker.started.is_set():
        return "starting (waiting for the database and the schema)"
    name = default_model(worker)
    if worker.ready.is_set() and name in worker.embedders.loaded():
        return None
    try:
        default = worker.embedders.get(name)
    except exceptions.ModelError as exc:
        return str(exc)
    metrics.MODEL.info(
        {
            "name": name,
            "variant": worker.settings.model_variant,
            "dimensions": str(default.dim),
            "max_tokens": str(default.max_tokens),
        }
    )
    worker.ready.set()
    return None
