"""Targets as the worker reads them: loaded from embeddings.targets (with their model changes and
the remote models registered), and a registry that keeps them as last read (Target itself is
worker/target.py's)."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row

from worker import db, queries
from worker.models.remote.spec import RemoteSpec, built_in_fix, built_in_rows, specs_of
from worker.target import Target

logger = logging.getLogger(__name__)


def load(conn: db.Connection) -> dict[int, Target]:
    with db.translated():
        rows = (
            conn.cursor(row_factory=dict_row)
            .execute(queries.compose("load_targets", which=sql.SQL("true")))
            .fetchall()
        )
    return _with_changes(conn, {row["id"]: target_of(row) for row in rows})


# Target's fields that load_targets' columns of the same names give as they are.
_AS_READ = (
    "id",
    "schema",
    "table",
    "embedding_column",
    "embedding_type",
    "content_column",
    "model",
    "queue",
    "version",
    "registry_problem",
    "chunk_tokens",
    "chunk_overlap",
    "document_format",
    "content_bytes",
    "context_header",
    "has_fulltext",
    "store_kind",
    "chunked",
    "rerank_model",
    "rerank_depth",
    "source",
    "qualified_name",
)


def target_of(row: dict[str, Any]) -> Target:
    """A target from a row of the named query load_targets, by its columns' names."""
    return Target(
        **{name: row[name] for name in _AS_READ},
        embedding_dims=row["embedding_dims"] if row["embedding_dims"] is not None else -1,
        content_function=(
            (row["function_schema"], row["function_name"])
            if row["function_name"] is not None
            else None
        ),
        key_columns=tuple(row["key_columns"] or ()),
        key_types=tuple(row["key_types"] or ()),
    )


def _with_changes(conn: db.Connection, found: dict[int, Target]) -> dict[int, Target]:
    """The targets with their model changes in progress (a shadow column that is gone or not of
    a vector type counts as none: the target is served as before)."""
    with db.translated():
        rows = conn.execute(queries.compose("load_changes")).fetchall()
    for target_id, model, column, typname, typmod in rows:
        if target_id in found and typname in ("vector", "halfvec"):
            found[target_id] = dataclasses.replace(
                found[target_id], shadow_model=model, shadow_column=column, shadow_dims=typmod
            )
    return found


def database_default_model(conn: db.Connection) -> str | None:
    """The database's default model (`embeddings.default_model()`, what watch() uses when no
    model is named); None when it names none or the database has no embeddings schema."""
    with db.translated():
        defined = conn.execute(queries.get("default_model_defined")).fetchone()
        if not defined or not defined[0]:
            return None
        row = conn.execute(queries.get("default_model")).fetchone()
    return str(row[0]) if row and row[0] is not None else None


def load_remote_models(conn: db.Connection) -> dict[str, RemoteSpec]:
    """The registry's remote models by name (worker/models/remote/spec.py)."""
    return load_remote_registry(conn)[0]


def load_remote_registry(conn: db.Connection) -> tuple[dict[str, RemoteSpec], dict[str, str]]:
    """The registry's remote models by name, and those this worker cannot serve with why (a
    provider kind it does not know), each logged."""
    with db.translated():
        rows = conn.cursor(row_factory=dict_row).execute(queries.get("remote_models")).fetchall()
    specs, refused = specs_of(rows)
    for name, why in refused.items():  # its targets wait, saying why (LoadedModels.get)
        logger.error("remote model %s is not served: %s", name, why)
    for name, why in built_in_rows(rows).items():  # the built-in model is served instead
        logger.error("remote model %s is not served: %s: %s", name, why, built_in_fix(name))
    return specs, refused


class TargetRegistry:
    """The targets, and the database's default model, as last read; refreshed when asked for an
    unknown target or when stale."""

    def __init__(self, max_age: float = 60.0) -> None:
        self.max_age = max_age
        self._targets: dict[int, Target] = {}
        self._database_default: str | None = None
        self._remote: dict[str, RemoteSpec] = {}
        self._refused: dict[str, str] = {}  # remote models of a kind this worker does not know
        self._local: frozenset[str] = frozenset()  # the registry's local models' names
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def refresh(self, conn: db.Connection) -> dict[int, Target]:
        targets = load(conn)
        default = database_default_model(conn)
        remote, refused = load_remote_registry(conn)
        with db.translated():
            local = frozenset(str(name) for (name,) in conn.execute(queries.get("local_models")))
        with self._lock:
            self._targets = targets
            self._database_default = default
            self._remote = remote
            self._refused = refused
            self._local = local
            self._loaded_at = time.monotonic()
        return targets

    def remote_models(self) -> dict[str, RemoteSpec]:
        """The remote models of the registry (sql/46_providers.sql), as last read."""
        with self._lock:
            return self._remote

    def refused_remote_models(self) -> dict[str, str]:
        """The registry's remote models this worker cannot serve, with why, as last read."""
        with self._lock:
            return self._refused

    def local_models(self) -> frozenset[str]:
        """The names of the registry's local models (register_model(..., 'local'), and the
        catalog's), as last read: those POST /embed may name when present on disk."""
        with self._lock:
            return self._local

    @property
    def read(self) -> bool:
        """Whether the registry was read at least once (start-up reads it once the database
        and our schema are there)."""
        with self._lock:
            return self._loaded_at > float("-inf")

    @property
    def database_default(self) -> str | None:
        """`embeddings.default_model()` as last read (None before the first read)."""
        with self._lock:
            return self._database_default

    def invalidate(self) -> None:
        with self._lock:
            self._loaded_at = float("-inf")

    def current(self, conn: db.Connection) -> dict[int, Target]:
        with self._lock:
            fresh = time.monotonic() - self._loaded_at < self.max_age
            targets = self._targets
        return targets if fresh else self.refresh(conn)

    def current_definitions(self, conn: db.Connection) -> dict[int, Target]:
        """The targets, re-read when any registration's definition version differs from the
        cached one (or a target came or went): a batch is never served under a definition that
        was already replaced when it was read."""
        targets = self.current(conn)
        with db.translated():
            versions = dict(conn.execute(queries.compose("target_versions")).fetchall())
        if versions != {t.id: t.version for t in targets.values()}:
            targets = self.refresh(conn)
        return targets

    def resolve(self, conn: db.Connection, ids: Iterable[int]) -> dict[int, Target]:
        """Targets by id, re-reading the registry once if some id is unknown."""
        targets = self.current(conn)
        if any(i not in targets for i in ids):
            targets = self.refresh(conn)
        return targets

    def snapshot(self) -> dict[int, Target]:
        with self._lock:
            return dict(self._targets)
