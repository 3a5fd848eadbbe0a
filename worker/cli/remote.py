"""Remote models in the CLI: their rows in `model list` (read from the database's registry,
sql/46_providers.sql), never anything secret: a row names its key (`credential`), and whether
the worker's environment has it, not the key."""

from __future__ import annotations

import logging

from worker import db, exceptions, queries, schema
from worker.config import Settings
from worker.models.remote.spec import RemoteSpec

logger = logging.getLogger(__name__)


def registered(settings: Settings) -> list[RemoteSpec] | None:
    """The database's remote models; None (with a note on stderr) when the database cannot be
    read: `model list` still lists the local models."""
    try:
        with db.connect(settings.dsn, connect_timeout=3) as conn, db.translated():
            if not schema.installed(conn):
                return []
            found = conn.execute(queries.get("models_have_providers")).fetchone()
            if not found or not found[0]:  # a schema before remote models: `migrate` adds them
                return []
            cursor = conn.execute(queries.get("remote_models"))
            columns = [c.name for c in cursor.description or ()]
            rows = cursor.fetchall()
    except exceptions.EmbedWorkerError as exc:
        logger.warning("remote models not listed: the database cannot be read: %s", exc)
        return None
    return [RemoteSpec.from_row(dict(zip(columns, row, strict=True))) for row in rows]


def list_rows(settings: Settings) -> list[list[str]]:
    """`model list` rows of the remote models: name, dim, pooling, max tokens, present (the
    key: found in the environment or not needed), where (the endpoint's host), source."""
    rows = []
    for spec in registered(settings) or []:
        if spec.credential is None:
            key = "no key needed"
        else:
            secret, where = settings.api_key(spec.credential)
            key = f"key: {where}" if secret is not None else f"no key (set {where})"
        rows.append(
            [
                spec.name,
                str(spec.dimensions),
                spec.pooling,
                str(spec.max_tokens),
                f"remote ({key})",
                spec.host,
                f"{spec.provider} {spec.remote_model}",
            ]
        )
    return rows
