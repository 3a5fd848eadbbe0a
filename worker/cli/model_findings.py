"""doctor's findings about models: the default model (EMBED_MODEL's and the database's), and
each model a watched table uses or the worker defaults to, local (on disk, or downloadable) or
remote (its key)."""

from __future__ import annotations

import os

from worker import db, escapes, exceptions, queries
from worker.cli import hints, remote
from worker.cli.findings import Finding, Level
from worker.config import Settings
from worker.models import catalog
from worker.models.remote.spec import RemoteSpec, built_in_fix
from worker.pipeline.targets import database_default_model


def findings(conn: db.Connection, settings: Settings, readable: bool) -> list[Finding]:
    """The default model, then every model in use, each once (`readable`: the role may read
    embeddings.models)."""
    watched = {m for (m,) in conn.execute(queries.get("watched_models")).fetchall()}
    database_default = database_default_model(conn) if readable else None
    out = [_default_model(settings, database_default)]
    remote_models, refused, built_in = remote.in_database(conn) if readable else ({}, {}, {})
    for model in sorted(built_in):  # rows an earlier release let be made: ignored
        fix = f"put the row back: {built_in_fix(model)}"
        out.append(Finding("FAIL", f"model {model}'s registration", built_in[model], fix))
    for model in sorted({settings.default_model(database_default)} | watched):
        spec = remote_models.get(model)
        if model in refused:  # a provider kind this worker does not know: no key serves it
            fix = "register the model again with a known provider kind, or upgrade the worker"
            out.append(Finding("FAIL", f"model {model}", f"remote: {refused[model]}", fix))
        elif spec is None:
            out.append(_model(model, settings))
        else:
            out.append(_remote_model(spec, settings))
    return out


def _default_model(settings: Settings, database_default: str | None) -> Finding:
    """Which model `embed` and POST /embed use when none is named, and whether it is the one
    watch() uses (the database's default): two different answers are a warning, named both."""
    name = settings.default_model(database_default)
    if settings.model is None:
        source = (
            "the database's default model, embeddings.default_model()"
            if database_default
            else "built in: the database names none"
        )
        return Finding(
            "ok",
            "default model",
            f"{name} ({source}); EMBED_MODEL is unset, so embed and POST /embed use it too",
        )
    if database_default in (None, settings.model):
        also = ", and the database's default too" if database_default else ""
        return Finding("ok", "default model", f"{name} (EMBED_MODEL{also})")
    return Finding(
        "warn",
        "default model",
        f"EMBED_MODEL={settings.model} is what embed and POST /embed use when no model is "
        f"named, but the database's default is {database_default} (embeddings.default_model(), "
        "what watch() uses when no model is named)",
        "unset EMBED_MODEL to follow the database, or make the database agree: "
        f"SELECT embeddings.set_default_model({escapes.shown_literal(settings.model)});",
    )


def _model(name: str, settings: Settings) -> Finding:
    location = settings.model_location
    try:
        where = location.locate(name)
    except exceptions.ModelNotFound:
        return _missing_model(name, settings)
    return Finding("ok", f"model {name}", f"found in {os.fspath(where)}")


def _remote_model(spec: RemoteSpec, settings: Settings) -> Finding:
    """A remote model is not looked for on disk: its key is (in this command's environment,
    which should be the worker's), by its credential's name and where it was found."""
    detail, fix = remote.key_problem(spec, settings)
    level: Level = "ok" if fix is None else "FAIL"
    return Finding(level, f"model {spec.name}", f"remote, {spec.describe()}; {detail}", fix or "")


def _missing_model(name: str, settings: Settings) -> Finding:
    """A model that is not on disk: what is wrong, and the exact command or files that fix it."""
    location, off_by = settings.model_location, settings.downloads.off_by
    check = f"model {name}"
    fetch = hints.model_download(name, settings)
    incomplete = location.incomplete(name)
    if incomplete:
        fix = f"complete {incomplete[0]}: {hints.model_layout(name, settings, incomplete[0])}"
        if name in catalog.REGISTRY:
            fix += f"; or remove it and fetch the model: `{fetch}`"
        return Finding("FAIL", check, location.why_incomplete(incomplete[0]), fix)
    searched = ", ".join(os.fspath(d) for d in location.search_dirs())
    offline_use = hints.model_on_path(name, settings)
    if name not in catalog.REGISTRY:
        return Finding(
            "FAIL",
            check,
            f"not present (looked in {searched}); no download exists for it",
            offline_use,
        )
    if off_by is None:
        return Finding(
            "warn",
            check,
            f"not on disk here (looked in {searched}); the worker downloads it on first use",
            f"to fetch it now: `{fetch}`",
        )
    return Finding(
        "FAIL",
        check,
        f"not present (looked in {searched}) and downloads are off"
        f" ({settings.downloads.off_as_set})",
        f"`{fetch}` where the hub is reachable (it fills {location.cache.absolute() / name}/: "
        f"copy that directory here if it ran on another machine); or {offline_use}",
    )
