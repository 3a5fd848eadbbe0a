"""The `embed-worker` command line.

Exit codes: 0 success; 1 a runtime failure (database, model, HTTP) or, for `doctor`, a problem
found; 2 bad usage or configuration; 3 `run --once` left jobs it could not serve (held). Every
environment variable has a flag; flags win. Global options (connection, logging, model
location) go before or after the subcommand.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

from worker import exceptions, exits, logs
from worker.cli.parser import build_parser
from worker.config import Settings

logger = logging.getLogger("worker.cli")


def settings_from(args: argparse.Namespace) -> Settings:
    """The Settings: the environment, with the flags given applied over it."""
    names = (
        "database_url",
        "log_format",
        "log_level",
        "model_variant",
        "model_path",
        "cache_dir",
        "threads",
        "model",
        "queue",
        "batch_size",
        "vt_seconds",
        "max_attempts",
        "piece_tokens",
        "max_document_bytes",
        "http_port",
        "http_host",
        "pull",
    )
    return Settings.from_env(**{n: getattr(args, n, None) for n in names})


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args)
    except exceptions.ConfigError as exc:
        print(f"embed-worker: {exc}", file=sys.stderr)
        return exits.USAGE
    quiet = args.command in ("search", "embed") and getattr(args, "log_level", None) is None
    # search and embed print results: their model loading is not news (warnings still show).
    logs.configure(settings.log_format, "WARNING" if quiet else settings.log_level)
    from worker.cli import commands  # the heavy imports (onnxruntime, alembic) only past parsing

    try:
        return commands.dispatch(args, settings)
    except exceptions.ConfigError as exc:
        logger.error("%s", exc)
        return exits.USAGE
    except exceptions.StatementTimeout as exc:
        logger.error("%s", statement_timeout_message(exc))
        return exits.FAILURE
    except exceptions.EmbedWorkerError as exc:
        if not exc.logged:  # (a model's load failure is logged where it fails, once)
            logger.error("%s", exc)
        return exits.FAILURE
    except KeyboardInterrupt:
        return exits.interrupted(signal.SIGINT)


def statement_timeout_message(exc: exceptions.StatementTimeout) -> str:
    """A command cancelled by its session's statement_timeout: the server's first line, not the
    statements it was inside (pages of our SQL), and how to give this one command longer."""
    return (
        f"{exc.first_line}: the session's {exceptions.SESSION_TIMEOUT} "
        "is shorter than this command needs. Run it again with a longer one for its own "
        "session: PGOPTIONS='-c statement_timeout=10min' in its environment (`status` reads "
        "every watched table's counts, seconds beside a thousand tables; --exact scans each)"
    )
