"""Remote models and remote rerankers in the CLI: their rows in `model list` and doctor's
checks of them (read from the database's registries, sql/46_providers.sql and
sql/57_rerank.sql), never anything secret: a row names its key (`credential`), and whether the
worker's environment has it, not the key."""

from __future__ import annotations

import logging
import os

from psycopg.rows import dict_row

from worker import db, escapes, exceptions, queries
from worker.cli import connection
from worker.cli.findings import Finding, Level
from worker.config import Settings
from worker.models.remote import keys, providers
from worker.models.remote.keys import Keyed
from worker.models.remote.rerank_spec import RerankerSpec
from worker.models.remote.spec import RemoteSpec, built_in_fix, built_in_rows, specs_of

logger = logging.getLogger(__name__)


def registered(settings: Settings) -> tuple[list[RemoteSpec], list[RerankerSpec]] | None:
    """The database's remote models and remote rerankers; None (with a note on stderr) when the
    database cannot be read: `model list` still lists the local models. A schema of another
    release is SchemaMismatch (exit 1, what to run), as for every command that reads it: its
    registry read as this release's would list what the worker could not serve. The remote
    models the worker does not serve are not listed: a warning on stderr says why, each."""
    try:
        with connection.connect_if_reachable(settings) as conn, db.translated():
            if not connection.of_this_release(conn, settings):
                return [], []
            specs, refused, built_in = in_database(conn)
            for name, why in refused.items():
                logger.warning("remote model %s not listed: it is not served: %s", name, why)
            for name, why in built_in.items():
                logger.warning("remote model %s not listed: %s: %s", name, why, built_in_fix(name))
            return list(specs.values()), list(rerankers(conn)[0].values())
    except (exceptions.SchemaMismatch, exceptions.ConfigError):
        raise
    except exceptions.EmbedWorkerError as exc:
        logger.warning("remote models not listed: the database cannot be read: %s", exc)
        return None


def in_database(
    conn: db.Connection,
) -> tuple[dict[str, RemoteSpec], dict[str, str], dict[str, str]]:
    """The remote models of an installed schema by name (none before 0.2.0's: `migrate` adds
    them); those of a provider kind this worker does not know, with why; and those under a
    built-in model's name, which the worker ignores (spec.built_in_rows()), with why."""
    found = conn.execute(queries.get("models_have_providers")).fetchone()
    if not found or not found[0]:
        return {}, {}, {}
    rows = conn.cursor(row_factory=dict_row).execute(queries.get("remote_models")).fetchall()
    return (*specs_of(rows), built_in_rows(rows))


def rerankers(conn: db.Connection) -> tuple[dict[str, RerankerSpec], dict[str, str]]:
    """The remote rerankers of an installed schema by name (none before 0.3.0's, or for a role
    that may not read them), and those of a kind this worker does not know, with why."""
    found = conn.execute(queries.get("rerankers_readable")).fetchone()
    if not found or not found[0]:
        return {}, {}
    rows = conn.cursor(row_factory=dict_row).execute(queries.get("rerankers"), {"name": None})
    specs: dict[str, RerankerSpec] = {}
    refused: dict[str, str] = {}
    for row in rows.fetchall():
        try:
            specs[row["name"]] = RerankerSpec.from_row(row)
        except exceptions.ConfigError as exc:
            refused[row["name"]] = str(exc)
    return specs, refused


def key_problem(spec: Keyed, settings: Settings) -> tuple[str, str | None]:
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
    variable = keys.variable_of(credential)
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
    """`model list` rows of the remote models and rerankers: name, dim (`rerank` for a
    reranker), pooling (`-` where the provider's vectors come pooled), max tokens, present (the
    key: found in the environment or not needed), where (the endpoint's host), source."""
    rows = []
    models, rerank_apis = registered(settings) or ([], [])
    for spec in models:
        rows.append(
            [
                spec.name,
                str(spec.dimensions),
                spec.pooling if providers.of(spec.provider).pools_tokens else "-",
                str(spec.max_tokens),
                f"remote ({_key(spec, settings)})",
                spec.host,
                f"{spec.provider} {spec.remote_model}",
            ]
        )
    for reranker in rerank_apis:
        rows.append(
            [
                reranker.name,
                "rerank",
                "-",
                str(reranker.max_tokens),
                f"remote reranker ({_key(reranker, settings)})",
                reranker.host,
                " ".join(filter(None, (reranker.provider, reranker.remote_model))),
            ]
        )
    return rows


def _key(spec: Keyed, settings: Settings) -> str:
    if spec.credential is None:
        return "no key needed"
    try:
        secret, where = settings.api_key(spec.credential)
    except exceptions.ConfigError as exc:  # unreadable or malformed: names no key
        return f"key unusable: {exc}"
    return f"key: {where}" if secret is not None else f"no key (set {where})"


def reranker_findings(conn: db.Connection, settings: Settings) -> list[Finding]:
    """doctor's checks of the rerankers: each registered remote one (its kind, its endpoint's
    plain http, its key in this environment), and each reranker a table's rerank stage names
    that is neither registered nor a directory on the model path. A problem of a reranker some
    table reranks with is a FAIL (its searches answer 503); of one only searches may name, a
    warning."""
    specs, refused = rerankers(conn)
    used = dict(conn.execute(queries.get("target_rerankers")).fetchall())
    out = [
        _registered_finding(name, specs.get(name), refused.get(name), name in used, settings)
        for name in sorted({*specs, *refused})
    ]
    for name, tables in used.items():
        if name in specs or name in refused:
            continue
        try:
            where = settings.model_location.locate(name)
        except exceptions.ModelNotFound as exc:
            out.append(
                Finding(
                    "FAIL",
                    f"reranker {name}",
                    f"the rerank stage of {tables}: no remote reranker of that name, and {exc}",
                    "register it (embeddings.register_reranker()) or copy the cross-encoder's"
                    " directory onto EMBED_MODEL_PATH (docs/rag.md#reranking)",
                )
            )
        else:
            out.append(Finding("ok", f"reranker {name}", f"cross-encoder in {where}"))
    return out


def _registered_finding(
    name: str, spec: RerankerSpec | None, refused: str | None, used: bool, settings: Settings
) -> Finding:
    level: Level = "FAIL" if used else "warn"
    check = f"reranker {name}"
    if spec is None:
        fix = "register it again with a known kind, or upgrade the worker"
        return Finding(level, check, f"remote: {refused}", fix)
    problem = spec.plain_http_problem()
    if problem is not None:
        fix = (
            f"SELECT embeddings.register_reranker({escapes.shown_literal(name)}, ...) "
            "with an https endpoint"
        )
        return Finding(level, check, f"remote, {spec.describe()}: {problem}", fix)
    detail, missing = key_problem(spec, settings)
    if missing is None:
        return Finding("ok", check, f"remote, {spec.describe()}; {detail}")
    return Finding(level, check, f"remote, {spec.describe()}; {detail}", missing)
