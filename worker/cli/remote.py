"""Remote models in the CLI: their rows in `model list` (read from the database's registry,
sql/46_providers.sql), never anything secret: a row names its key (`credential`), and whether
the worker's environment has it, not the key."""

from __future__ import annotations

import logging
import os

from psycopg.rows import dict_row

from worker import db, exceptions, queries, schema
from worker.config import Settings
from worker.models.remote import keys
from worker.models.remote.spec import RemoteSpec, specs_of

logger = logging.getLogger(__name__)


def registered(settings: Settings) -> list[RemoteSpec] | None:
    """The database's remote models; None (with a note on stderr) when the database cannot be
    read: `model list` still lists the local models."""
    try:
        with db.connect(settings.dsn, connect_timeout=3) as conn, db.translated():
            if not schema.installed(conn):
                return []
            return list(in_database(conn)[0].values())
    except exceptions.EmbedWorkerError as exc:
        logger.warning("remote models not listed: the database cannot be read: %s", exc)
        return None


def in_database(conn: db.Connection) -> tuple[dict[str, RemoteSpec], dict[str, str]]:
    """The remote models of an installed schema by name (none before 0.2.0's: `migrate` adds
    them), and those of a provider kind this worker does not know, with why."""
    found = conn.execute(queries.get("models_have_providers")).fetchone()
    if not found or not found[0]:
        return {}, {}
    rows = conn.cursor(row_factory=dict_row).execute(queries.get("remote_models")).fetchall()
    return specs_of(rows)


def key_problem(spec: RemoteSpec, settings: Settings) -> tuple[str, str | None]:
    """Where `spec`'s key comes from in this environment, and, when it cannot be had, what to
    do (None when nothing): never the key. For doctor."""
    if spec.credential is None:
        return "no key needed (credential => '')", None
    credential = spec.credential
    try:
        secret, where = settings.api_key(credential)
    except exceptions.ConfigError as exc:
        return str(exc), (
            "make the key readable by the worker's user, the key alone on one line (a file may"
            " end with one newline)"
        )
    if secret is not None:
        return f"the key of credential {credential!r} is in {where}", None
    variable = keys.CREDENTIAL_VARIABLES.get(credential)
    if settings.api_key_dir:
        file = f"a file {os.path.join(settings.api_key_dir, credential)} holding the key"
    else:
        file = f"{keys.KEY_DIR} to a directory with a file named {credential!r} holding the key"
    also = f", or {variable} in the worker's environment" if variable else ""
    return (
        f"no API key for credential {credential!r} (looked in {where}): its targets wait",
        f"set {file}{also} (docs/providers.md#api-keys)",
    )


def list_rows(settings: Settings) -> list[list[str]]:
    """`model list` rows of the remote models: name, dim, pooling, max tokens, present (the
    key: found in the environment or not needed), where (the endpoint's host), source."""
    rows = []
    for spec in registered(settings) or []:
        if spec.credential is None:
            key = "no key needed"
        else:
            try:
                secret, where = settings.api_key(spec.credential)
                key = f"key: {where}" if secret is not None else f"no key (set {where})"
            except exceptions.ConfigError as exc:  # unreadable or malformed: names no key
                key = f"key unusable: {exc}"
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
