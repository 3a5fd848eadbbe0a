"""What each `embed-worker` subcommand does (the parser is worker/cli/parser.py)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
from typing import TYPE_CHECKING, Literal

import psycopg

from worker import conninfo, db, exceptions, exits, queries, schema
from worker.cli import embedding, hints, output
from worker.cli.connection import connect, refuse_misconfigured
from worker.config import PG_INTEGER_MAX, SECONDS_MAX, Settings

if TYPE_CHECKING:  # the models are imported when a command embeds: the others start faster
    from worker.models.files import ModelRow


def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    handler = {
        "migrate": migrate,
        "run": run,
        "status": status,
        "embed": embedding.embed,
        "search": embedding.search,
        "failures": failures,
        "model": model,
        "doctor": doctor,
        "sweep": sweep,
        "plan": plan,
        "deploy": deploy,
    }[args.command]
    return handler(args, settings)


def deploy(args: argparse.Namespace, settings: Settings) -> int:
    from worker.cli.deploy import DIRECTORIES, print_file, write_kustomization

    if args.file in DIRECTORIES:
        if args.directory is None:
            raise exceptions.ConfigError(
                f"`embed-worker deploy {args.file} DIR`: name the directory to write it into"
            )
        return write_kustomization(args.directory)
    if args.directory is not None:
        raise exceptions.ConfigError(f"`embed-worker deploy {args.file}` prints: it takes no DIR")
    return print_file(args.file)


def doctor(args: argparse.Namespace, settings: Settings) -> int:
    from worker.cli.doctor import run as run_doctor

    dsn = settings.dsn
    output.say_database(dsn, settings.database_url)
    return run_doctor(dsn, settings)


def plan(args: argparse.Namespace, settings: Settings) -> int:
    from worker.cli import plan as planning

    per_row = args.tokens_per_row
    if per_row is not None and not (0 < per_row < math.inf):  # nan too
        raise exceptions.ConfigError("--tokens-per-row takes a positive, finite number of tokens")
    with connect(settings) as conn:
        found = planning.make(
            conn,
            args.table,
            column=args.column,
            model=args.model,
            content=args.content,
            tokens_per_row=args.tokens_per_row,
        )
    planning.show(found, as_json=args.json)
    return exits.OK


def migrate(args: argparse.Namespace, settings: Settings) -> int:
    dsn = settings.dsn
    # inf passed `>= 0` and retried for ever (nan and negatives did not); past SECONDS_MAX, as
    # every other wait of ours, it is no bound anyone means
    if not 0 <= args.lock_wait <= SECONDS_MAX:
        raise exceptions.ConfigError(
            f"--lock-wait takes a finite number of seconds, from 0 to {SECONDS_MAX},"
            f" not {args.lock_wait:g}"
        )
    output.say_database(dsn, settings.database_url)
    refuse_misconfigured(dsn, settings)
    # An unreachable database is reported plainly, not through Alembic.
    with db.connect(dsn, per_transaction=settings.per_transaction) as probe:
        row = probe.execute(queries.get("current_role")).fetchone()
    role = str(row[0]) if row else "this role"
    try:
        migration = schema.migrate(dsn, lock_wait=args.lock_wait)
    except exceptions.EmbedWorkerError:
        raise
    except Exception as exc:  # psycopg/SQLAlchemy errors from inside Alembic
        message = f"migration failed: {conninfo.redact(str(exc))}"
        if _denied(exc):
            message += (
                f". migrate changes the schema: it runs as the role that installed it (the "
                f"owner of schema embeddings) or a superuser, and {role} is neither (a worker "
                "role may not). Run it with the installer's DATABASE_URL, not the worker's "
                "(docs/upgrading.md)"
            )
        raise exceptions.DatabaseError(message) from exc
    # `applied 0002 (0.2.0)`, or `already at ...`; NOTICEs
    output.print_lines(migration.lines())
    return exits.OK


def _denied(exc: BaseException) -> bool:
    """Whether a permission error is at the root of `exc` (SQLAlchemy keeps psycopg's in .orig)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(getattr(seen, "orig", seen), psycopg.errors.InsufficientPrivilege):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def run(args: argparse.Namespace, settings: Settings) -> int:
    from worker.process.runner import Worker

    if args.once and not settings.pull:
        raise exceptions.ConfigError(
            "run --once drains the queue: it cannot go with EMBED_PULL=false"
        )
    worker = Worker(settings, once=args.once, progress=False if args.no_progress else None)
    http_server = None
    if settings.http_port is not None:
        from worker.http import server

        http_server = server.serve(worker, settings)
    try:
        code = worker.run()
    finally:
        if http_server is not None:
            http_server.shutdown()
    if worker.abandoned:
        # A request's thread is still running the model: the interpreter's exit would abort
        # under it (exit 134). Its jobs were handed back; end the process now.
        logging.shutdown()
        os._exit(code)
    return code


# --- status -----------------------------------------------------------------------------------
def status(args: argparse.Namespace, settings: Settings) -> int:
    from worker.cli.status import chosen_targets, show, watch

    # nan: a busy loop; past SECONDS_MAX (1e300) the redraw's wait overflowed (OverflowError)
    if args.watch is not None and not (0 < args.watch <= SECONDS_MAX):
        raise exceptions.ConfigError(
            f"--watch takes a positive, finite number of seconds, at most {SECONDS_MAX}"
        )
    with connect(settings) as conn:
        targets = chosen_targets(conn, args.table)
        if args.watch is not None:
            dsn = settings.dsn
            header = output.database_line(dsn, settings.database_url)
            with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C
                watch(
                    conn, args.watch, header, exact=args.exact, targets=targets, as_json=args.json
                )
            # (Ctrl-C ends it: the last frame, or line, was the last word; another print would
            # break the stream of one JSON document a line.)
            return exits.OK
        show(conn, as_json=args.json, exact=args.exact, targets=targets)
    return exits.OK


def sweep(args: argparse.Namespace, settings: Settings) -> int:
    from worker.cli import sweep as sweeping

    if not 1 <= args.max_rows <= PG_INTEGER_MAX:  # embeddings.sweep() takes an integer
        raise exceptions.ConfigError(f"--max-rows must be from 1 to {PG_INTEGER_MAX}")
    with connect(settings) as conn:
        sweeping.show(sweeping.run(conn, args), as_json=args.json)
    return exits.OK


# --- failures ---------------------------------------------------------------------------------
def failures(args: argparse.Namespace, settings: Settings) -> int:
    from worker.cli import failures as dead_letters

    dead_letters.check(args)
    with connect(settings) as conn:
        return dead_letters.run(conn, args, settings.dsn)


# --- models -----------------------------------------------------------------------------------
def _presence(row: ModelRow, settings: Settings) -> str:
    """yes; no (with why, when a directory of the name is there but not usable); or damaged: a
    downloaded file whose size is not the one recorded (truncated), and the command that
    fetches it again."""
    if not row.present:
        return f"no: {row.problem}" if row.problem else "no"
    if row.damaged:
        return f"damaged ({', '.join(row.damaged)}): {hints.model_download(row.name, settings)}"
    return "yes"


def _dim(row: ModelRow) -> str:
    """`model list`'s dim: `rerank` for a cross-encoder, and where it was read when the ONNX
    file does not declare it (config.json's hidden_size: what the embedder assumes then)."""
    if row.reranker:
        return "rerank"
    if row.dim is None:
        return "?"
    return f"{row.dim} ({row.dim_from})" if row.dim_from else str(row.dim)


def model(args: argparse.Namespace, settings: Settings) -> int:
    from worker.cli import remote
    from worker.models import catalog, download, files

    if args.model_command == "list":
        rows = files.list_models(settings.model_location)
        output.print_table(
            ["name", "dim", "pooling", "max tokens", "present", "where", "source"],
            [
                [
                    r.name,
                    _dim(r),
                    r.pooling,
                    str(r.max_tokens or "-"),
                    _presence(r, settings),
                    str(r.location or "-"),
                    r.source,
                ]
                for r in rows
            ]
            + remote.list_rows(settings),
        )
        return exits.OK
    if args.name not in catalog.REGISTRY:
        raise exceptions.ConfigError(f"model download: {download.unknown_message(args.name)}")
    policy = settings.downloads
    if policy.off_by is not None:
        # Downloads are off by the operator's word (docs/configuration.md): this command would
        # download, so it refuses rather than fetch anyway or fail inside huggingface_hub.
        raise exceptions.ConfigError(
            f"model download: downloads are off ({policy.off_as_set}), and this command only"
            f" downloads. Run it on a machine that reaches the hub, with {policy.off_by} unset,"
            " and copy the directory it prints to"
            f" {settings.model_location.cache.absolute() / args.name};"
            f" or {hints.model_on_path(args.name, settings)}"
        )
    variant: catalog.Variant | Literal["all"] = args.download_variant or settings.model_variant
    try:
        path = download.download(
            args.name, variant=variant, location=settings.model_location, endpoint=policy.endpoint
        )
    except exceptions.CacheNotWritable as exc:
        raise exceptions.ConfigError(f"model download: {exc}") from exc
    print(f"{args.name} is in {path}", file=sys.stderr)
    return exits.OK
