"""The commands that embed: `embed` prints vectors, `search` ranks a table's rows for a question
(through the search service of POST /search, worker/retrieval/search.py), and the flags of
`search` made into the request POST /search would receive."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import re
import sys
from typing import TYPE_CHECKING, Any

from worker import conninfo, db, exceptions, exits
from worker.cli import connection, hints, output
from worker.cli.connection import connect
from worker.config import Settings
from worker.retrieval.fusion import Fusion
from worker.retrieval.request import SearchRequest

if TYPE_CHECKING:  # the models are imported when a command embeds: the others start faster
    from worker.models.loaded import LoadedModels
    from worker.models.remote.spec import RemoteSpec


def embed(args: argparse.Namespace, settings: Settings) -> int:
    texts = _stdin_lines() if list(args.texts) == ["-"] else _arguments(args.texts)
    name = args.model or _default_model(settings)
    models = _models(settings, _remote_models_if_registered(name, settings))
    vectors = models.get(name).embed(texts)
    json.dump([[round(float(x), 7) for x in row] for row in vectors], sys.stdout)
    sys.stdout.write("\n")
    return exits.OK


def _arguments(texts: list[str]) -> list[str]:
    """The TEXT arguments, or ConfigError naming the first that is not UTF-8: Python keeps an
    argument's undecodable bytes as lone surrogates (surrogateescape), which no model takes."""
    for number, text in enumerate(texts, 1):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raw = text.encode("utf-8", "surrogateescape")  # the argument's bytes, as given
            at = len(text[: exc.start].encode("utf-8", "surrogateescape"))
            raise exceptions.ConfigError(
                f"embed: TEXT {number} is not UTF-8 (byte 0x{raw[at]:02x} at byte {at + 1})"
            ) from None
    return list(texts)


def _stdin_lines() -> list[str]:
    """`embed -`: standard input's lines (any newline), read as UTF-8 whatever the locale, or
    ConfigError naming the first line that is not UTF-8."""
    data = sys.stdin.buffer.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        raise exceptions.ConfigError(
            f"embed -: line {line} of standard input is not UTF-8 "
            f"(byte 0x{data[exc.start]:02x} at byte {exc.start - start + 1})"
        ) from None
    lines = [line.rstrip("\r\n") for line in io.StringIO(text, newline=None)]
    if not lines:
        raise exceptions.ConfigError("embed -: standard input held no lines")
    return lines


# How `embed` goes on without the database's schema: a catalog model or a directory's path
# needs none (any other name may be a model registered there, which wins over a directory).
NAME_ONE = (
    "; or name the model with --model or EMBED_MODEL: a catalog model, or a model directory"
    " by its path, needs no database"
)


def _default_model(settings: Settings) -> str:
    """The default model (Settings.default_model), saying on stderr which one and why: with
    EMBED_MODEL unset it is the database's, so the database is asked when it can be reached."""
    if settings.model:
        print(f"embed-worker: model {settings.model} (EMBED_MODEL)", file=sys.stderr)
        return settings.model
    from worker.pipeline.targets import database_default_model

    dsn = settings.dsn
    try:
        with connection.connect_if_reachable(settings) as conn:
            # (another release's default may not be this one's: say what to run, as the
            # commands that read the schema do)
            connection.of_this_release(conn, settings, otherwise=NAME_ONE)
            found = database_default_model(conn)
    except (exceptions.SchemaMismatch, exceptions.ConfigError):
        raise
    except exceptions.EmbedWorkerError as exc:
        name = settings.default_model(None)
        print(
            f"embed-worker: model {name} (the built-in default: could not ask the database for "
            f"its default model: {exc}; name one with --model or EMBED_MODEL)",
            file=sys.stderr,
        )
        return name
    name = settings.default_model(found)
    why = (
        f"the database's default model, embeddings.default_model() in {conninfo.describe(dsn)}"
        if found
        else f"the built-in default: {conninfo.describe(dsn)} names no default model"
    )
    print(f"embed-worker: model {name} ({why})", file=sys.stderr)
    return name


def _models(settings: Settings, remote: dict[str, RemoteSpec]) -> LoadedModels:
    """The models a command embeds with, loaded as the worker and POST /embed load them: a
    registry model by name (downloaded on first use), a model directory, or a remote model
    registered in the database (`remote`: embeddings.register_model())."""
    models = settings.loaded_models(retry_after=0.0)
    models.follow(lambda: remote)
    # (its logs are quiet: a first use would otherwise wait for the download in silence)
    models.on_download = lambda news: print(f"embed-worker: {news}", file=sys.stderr)
    return models


def _readable_remote_models(conn: db.Connection) -> dict[str, RemoteSpec]:
    """The registry's remote models, if this role may read them: an application's read-only
    role (the one its searches run as) may not, and searches a table of a local model all the
    same; a table of a remote model then says its model was not found."""
    from worker.pipeline.targets import load_remote_models

    try:
        return load_remote_models(conn)
    except exceptions.DatabaseError as exc:
        if not db.denied(exc):
            raise
        return {}


def _remote_models_if_registered(name: str, settings: Settings) -> dict[str, RemoteSpec]:
    """The database's remote models when `name` may be one of them (not a catalog model, not a
    path); none when the database cannot be reached, so that `embed` of a local model works
    without one (its own error then says what `name` was looked for as)."""
    from worker.models import catalog, files
    from worker.pipeline.targets import load_remote_models

    if name in catalog.REGISTRY or files.looks_like_path(name):
        return {}
    try:
        with connection.connect_if_reachable(settings) as conn:
            if not connection.of_this_release(conn, settings, otherwise=NAME_ONE):
                return {}
            return load_remote_models(conn)
    except (exceptions.SchemaMismatch, exceptions.ConfigError):
        raise
    except exceptions.EmbedWorkerError:
        return {}


def search(args: argparse.Namespace, settings: Settings) -> int:
    from worker.models.query_batch import QueryBatchers
    from worker.models.reranker import LoadedRerankers
    from worker.retrieval.search import SearchService

    request = _search_request(args)
    filter = request.filter
    if getattr(args, "database_url", None):  # a role named on the command line: over the env's
        settings = dataclasses.replace(settings, search_database_url=None)
    with connect(settings, searcher=True) as conn:
        status_hint = hints.command("status", settings.dsn)
        # The search service of POST /search, over this command's one connection, as its role:
        # the same request, checked the same way, embedded and ranked the same way, answered
        # from what the same rights may read (worker/retrieval/search.py).
        models = _models(settings, _readable_remote_models(conn))
        rerankers = LoadedRerankers(
            settings.model_location, settings.threads, api_key=settings.api_key
        )
        service = SearchService(
            lambda: contextlib.nullcontext(conn),
            QueryBatchers(models.get, max_batch=settings.query_batch_size),
            load_reranker=rerankers.get,
            then=f" then see `{status_hint}`",
        )
        try:
            results = service.search(request)
        finally:
            rerankers.close()
    if args.json:
        output.print_json(results)
        return exits.OK
    if not results:
        which = "match the filter" if filter else "have an embedding yet"
        print(f"no rows of {args.table} {which} (see `{status_hint}`)")
        return exits.OK
    reranked = results[0]["rerank_score"] is not None  # then ordered by that score
    # A hybrid search ranks by its fused score, not the similarity: the column it is ordered
    # by is shown (after the reranker's, which orders a reranked search).
    fused = results[0]["score"] is not None
    located = any(r["headings"] or r["page"] for r in results)  # documents: where each chunk is
    output.print_table(
        ["rerank"] * reranked
        + ["score"] * fused
        + ["similarity", "key"]
        + ["section"] * located
        + ["content"],
        [
            ([f"{r['rerank_score']:.3f}"] if reranked else [])
            + ([f"{r['score']:.4f}"] if fused else [])
            + [
                "-" if r["similarity"] is None else f"{r['similarity']:.3f}",
                str(r["key"]),
            ]
            + ([_section(r)] if located else [])
            + [output.preview(r["content"])]
            for r in results
        ],
    )
    return exits.OK


def _section(result: dict[str, Any]) -> str:
    """Where a document's chunk is: its heading path and PDF page ('Help > Refunds', 'p. 2')."""
    parts = [" > ".join(result["headings"] or [])] + (
        [f"p. {result['page']}"] if result["page"] is not None else []
    )
    return ", ".join(p for p in parts if p) or "-"


# How SearchRequest names what the command line calls a flag.
_FLAGS = {
    '"k"': "-k",
    '"mode"': "--mode",
    '"filter"': "--filter",
    '"column"': "--column",
    '"mode": "vector"': "--mode vector",
    '"rerank": false': "--no-rerank",
    '"rerank"': "--rerank",
    '"rerank_depth"': "--rerank-depth",
    **{f'"{name}"': f"--{name.replace('_', '-')}" for name in Fusion.names()},
    **{name: f"--{name.replace('_', '-')}" for name in Fusion.names()},
}


def _search_request(args: argparse.Namespace) -> SearchRequest:
    """The search as POST /search would receive it, checked by SearchRequest.parse; its
    complaints name the flags (--rrf-k where HTTP says "rrf_k")."""
    body: dict[str, Any] = {"table": args.table, "query": args.query, "k": args.k}
    body |= {"column": args.column, "mode": args.mode}
    body |= {"rerank": args.rerank, "rerank_depth": args.rerank_depth}
    body |= {name: getattr(args, name) for name in Fusion.names()}
    if args.filter is not None:
        try:
            body["filter"] = json.loads(args.filter)
        except ValueError as exc:
            raise exceptions.ConfigError(f"--filter is not JSON: {exc}") from None
    try:
        return SearchRequest.parse({k: v for k, v in body.items() if v is not None})
    except ValueError as exc:
        said = "|".join(re.escape(k) for k in sorted(_FLAGS, key=len, reverse=True))
        message = re.sub(rf"(?<![\w-])({said})(?![\w-])", lambda m: _FLAGS[m[1]], str(exc))
        raise exceptions.ConfigError(message) from None
