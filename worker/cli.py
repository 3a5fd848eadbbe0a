"""The `embed-worker` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from worker import __version__, db, exceptions, schema


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="embed-worker")
    parser.add_argument("--version", action="version", version=f"embed-worker {__version__}")
    parser.add_argument("--database-url", help="libpq URL or conninfo [DATABASE_URL]")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="install or upgrade the database schema")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    dsn = db.resolve_dsn(args.database_url or None)
    try:
        schema.migrate(dsn)
    except exceptions.EmbedWorkerError as exc:
        print(f"embed-worker: {exc}", file=sys.stderr)
        return 1
    return 0
