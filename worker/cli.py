"""The `embed-worker` command line.

Exit codes: 0 success; 1 a runtime failure (database, model, HTTP); 2 bad usage or
configuration. Every environment variable has a flag; flags win.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from worker import __version__, exceptions, logs
from worker.config import Settings

logger = logging.getLogger("worker.cli")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embed-worker",
        description="Postgres-native embedding worker: keeps the embedding columns of watched "
        "tables up to date, from a pgmq queue, with a local ONNX model.",
        epilog="Each option also reads an environment variable (shown in brackets); the option "
        "wins. Without DATABASE_URL or PG* variables, the local `make db` cluster is used.",
    )
    parser.add_argument("--version", action="version", version=f"embed-worker {__version__}")
    common = parser.add_argument_group("connection and logging")
    common.add_argument(
        "--database-url", metavar="URL", help="libpq URL or conninfo [DATABASE_URL]"
    )
    common.add_argument("--log-format", choices=("text", "json"), help="[EMBED_LOG_FORMAT]")
    common.add_argument("--log-level", help="DEBUG, INFO, WARNING... [EMBED_LOG_LEVEL]")
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model-path", metavar="DIRS", help="colon-separated model directories [EMBED_MODEL_PATH]"
    )
    model.add_argument("--cache-dir", metavar="DIR", help="download cache [EMBED_CACHE_DIR]")
    model.add_argument(
        "--variant", dest="model_variant", choices=("fp32", "int8"), help="[EMBED_MODEL_VARIANT]"
    )
    model.add_argument("--threads", type=int, help="inference threads [EMBED_THREADS]")

    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    commands.add_parser(
        "migrate", help="install or upgrade the database schema (Alembic upgrade head)"
    )

    run = commands.add_parser("run", help="run the worker")
    run.add_argument("--once", action="store_true", help="drain the queue, then exit 0")
    run.add_argument("--model", help="default model (for /embed) [EMBED_MODEL]")
    run.add_argument("--queue", help="pgmq queue [EMBED_QUEUE]")
    run.add_argument("--batch-size", type=int, help="rows per batch [EMBED_BATCH_SIZE]")
    run.add_argument("--vt-seconds", type=int, help="lease (visibility timeout) [EMBED_VT_SECONDS]")
    run.add_argument(
        "--max-attempts", type=int, help="attempts before dead-lettering [EMBED_MAX_ATTEMPTS]"
    )
    run.add_argument(
        "--http-port", type=int, help="serve /healthz, /readyz, /metrics, /embed [EMBED_HTTP_PORT]"
    )
    run.add_argument(
        "--http-host", help="bind address for HTTP (default 127.0.0.1) [EMBED_HTTP_HOST]"
    )
    run.add_argument(
        "--no-pull",
        dest="pull",
        action="store_const",
        const=False,
        help="lease no jobs; serve only those POSTed to /functions/v1/embed [EMBED_PULL=false]",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress line on a terminal")

    status = commands.add_parser(
        "status", help="per watched table: rows, embedded, pending, failed"
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")

    embed = commands.add_parser("embed", help="print the embeddings of TEXT... as a JSON list")
    embed.add_argument("texts", nargs="+", metavar="TEXT")
    embed.add_argument("--model", help="model name or directory [EMBED_MODEL]")

    search = commands.add_parser("search", help="rows of TABLE nearest in meaning to QUERY")
    search.add_argument("table", metavar="TABLE", help="a watched table, e.g. public.documents")
    search.add_argument("query", metavar="QUERY")
    search.add_argument("-k", type=int, default=5, help="how many rows (default 5)")
    search.add_argument("--column", help="embedding column, when the table has several")
    search.add_argument("--json", action="store_true")

    failures = commands.add_parser("failures", help="list dead-lettered jobs")
    failures.add_argument("--retry", action="store_true", help="re-queue them all")
    failures.add_argument("--json", action="store_true")

    model_cmd = commands.add_parser("model", help="list or download models")
    model_commands = model_cmd.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    model_commands.add_parser("list", help="known models and which are present")
    download = model_commands.add_parser("download", help="fetch a model from the Hugging Face hub")
    download.add_argument("name", metavar="NAME")
    download.add_argument(
        "--variant",
        dest="download_variant",
        choices=("fp32", "int8", "all"),
        help="which ONNX file(s) to fetch (default: EMBED_MODEL_VARIANT)",
    )
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    # The model search path and cache are read by worker.models from the environment.
    if getattr(args, "model_path", None):
        os.environ["EMBED_MODEL_PATH"] = args.model_path
    if getattr(args, "cache_dir", None):
        os.environ["EMBED_CACHE_DIR"] = args.cache_dir
    names = (
        "database_url",
        "log_format",
        "log_level",
        "model_variant",
        "threads",
        "model",
        "queue",
        "batch_size",
        "vt_seconds",
        "max_attempts",
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
        return EXIT_USAGE
    logs.configure(settings.log_format, settings.log_level)
    from worker import commands  # the heavy imports (onnxruntime, alembic) only past parsing

    try:
        return commands.dispatch(args, settings)
    except exceptions.ConfigError as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    except exceptions.EmbedWorkerError as exc:
        logger.error("%s", exc)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
