"""What each `embed-worker` subcommand does (the parser is worker/cli/parser.py)."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from typing import TYPE_CHECKING, Literal

from worker import db, exceptions, exits, schema
from worker.cli import embedding, output
from worker.cli.connection import connect
from worker.config import PG_INTEGER_MAX, Settings

if TYPE_CHECKING:  # the models are imported when a command embeds: the others start faster
    pass


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
    if not args.lock_wait >= 0:
        raise exceptions.ConfigError("--lock-wait takes a number of seconds, 0 or more")
    output.say_database(dsn, settings.database_url)
    db.connect(dsn).close()  # an unreachable database is reported plainly, not through Alembic
    try:
        migration = schema.migrate(dsn, lock_wait=args.lock_wait)
    except exceptions.EmbedWorkerError:
        raise
    except Exception as exc:  # psycopg/SQLAlchemy errors from inside Alembic
        raise exceptions.DatabaseError(f"migration failed: {db.redact(str(exc))}") from exc
    # `applied 0002 (0.2.0)`, or `already at ...`; NOTICEs
    output.print_lines(migration.lines())
    return exits.OK


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
        return worker.run()
    finally:
        if http_server is not None:
            http_server.shutdown()


# --- status -----------------------------------------------------------------------------------
def status(args: argparse.Namespace, settings: Settings) -> int:
    from worker.cli.status import chosen_targets, show, watch

    if args.watch is not None and not (0 < args.watch < math.inf):  # nan: a busy loop
        raise exceptions.ConfigError("--watch takes a positive, finite number of seconds")
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
                    str(r.dim or "?"),
                    r.pooling,
                    str(r.max_tokens),
                    "yes" if r.present else "no",
                    str(r.location or "-"),
                    r.source,
                ]
                for r in rows
            ]
            + remote.list_rows(settings),
        )
        return exits.OK
    variant: catalog.Variant | Literal["all"] = args.download_variant or settings.model_variant
    path = download.download(
        args.name,
        variant=variant,
        location=settings.model_location,
        endpoint=settings.downloads.endpoint,
    )
    print(f"{args.name} is in {path}", file=sys.stderr)
    return exits.OK
