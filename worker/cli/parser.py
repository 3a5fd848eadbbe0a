"""The `embed-worker` parser: the global options (before or after the command), each command's
flags, and the table of commands (name, help line, whether it loads a model, its flags)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from worker import __version__
from worker.cli.descriptions import DESCRIPTIONS
from worker.config import LOG_LEVELS


def _global_options(
    defaults: str | None, *, models: bool = True, variant: bool = True
) -> argparse.ArgumentParser:
    """The options accepted before and after the subcommand. `defaults` is None for the
    top-level parser and argparse.SUPPRESS for subcommands, so a value given before the
    subcommand is not reset by the subparser. Subcommands that load no model do not list the
    model options (they are still accepted before the subcommand)."""
    parent = argparse.ArgumentParser(add_help=False, argument_default=defaults)
    common = parent.add_argument_group("connection and logging")
    common.add_argument(
        "--database-url",
        metavar="URL",
        help="libpq URL or conninfo [DATABASE_URL]; default: PG* variables, else the local "
        "`make db` cluster",
    )
    common.add_argument(
        "--log-format",
        choices=("text", "json"),
        help="log lines as text or JSON [EMBED_LOG_FORMAT]",
    )
    common.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        help="the least severe log lines shown (any case) [EMBED_LOG_LEVEL]",
    )
    if not models:
        return parent
    model = parent.add_argument_group("model location")
    model.add_argument(
        "--model-path",
        metavar="DIRS",
        help="colon-separated directories holding model directories [EMBED_MODEL_PATH]",
    )
    model.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="download cache (default ~/.cache/embed-worker) [EMBED_CACHE_DIR]",
    )
    if variant:  # `model download --variant` has its own meaning
        model.add_argument(
            "--variant",
            dest="model_variant",
            choices=("fp32", "int8"),
            help="model weights to run [EMBED_MODEL_VARIANT]",
        )
    model.add_argument("--threads", type=int, metavar="N", help="inference threads [EMBED_THREADS]")
    return parent


def _migrate_options(migrate: argparse.ArgumentParser) -> None:
    migrate.add_argument(
        "--lock-wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to keep trying while the tables it changes are in use (default 60);"
        " each try waits under a second, so running workers are never held longer",
    )


def _run_options(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "--once",
        action="store_true",
        help="drain the queue, then exit 0 (3 when it left jobs it could not serve)",
    )
    run.add_argument(
        "--model",
        help="the model for POST /embed when a request names none; default: the database's "
        "default model, embeddings.default_model() [EMBED_MODEL]",
    )
    run.add_argument("--queue", help="pgmq queue [EMBED_QUEUE]")
    run.add_argument("--batch-size", type=int, help="rows per batch [EMBED_BATCH_SIZE]")
    run.add_argument("--vt-seconds", type=int, help="lease (visibility timeout) [EMBED_VT_SECONDS]")
    run.add_argument(
        "--max-attempts", type=int, help="attempts before dead-lettering [EMBED_MAX_ATTEMPTS]"
    )
    # Chunked targets' long documents (worker/pipeline/pieces.py).
    run.add_argument(
        "--piece-tokens",
        type=int,
        help="chunked targets: tokens embedded per piece of a long document [EMBED_PIECE_TOKENS]",
    )
    run.add_argument(
        "--max-document-bytes",
        type=int,
        help="chunked targets: larger documents fail at once; 0: no ceiling "
        "[EMBED_MAX_DOCUMENT_BYTES]",
    )
    run.add_argument(
        "--http-port",
        type=int,
        help="serve /healthz, /readyz, /metrics, /embed, /search, /functions/v1/embed"
        " [EMBED_HTTP_PORT]",
    )
    run.add_argument(
        "--http-host",
        help="bind address for HTTP (default 127.0.0.1; IPv6: :: or ::1) [EMBED_HTTP_HOST]",
    )
    run.add_argument(
        "--no-pull",
        dest="pull",
        action="store_const",
        const=False,
        help="lease no jobs; serve only those POSTed to /functions/v1/embed [EMBED_PULL=false]",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress line on a terminal")


def _status_options(status: argparse.ArgumentParser) -> None:
    status.add_argument(
        "table", nargs="?", metavar="TABLE", help="only this table's targets (default: all)"
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.add_argument(
        "--exact",
        action="store_true",
        help="count rows exactly (scans every watched table; without it, large tables' counts "
        "are estimates, marked ~)",
    )
    status.add_argument(
        "--watch",
        nargs="?",
        const=2.0,
        type=float,
        metavar="SECONDS",
        help="refresh in place every SECONDS (default 2) until Ctrl-C",
    )


def _embed_options(embed: argparse.ArgumentParser) -> None:
    embed.add_argument(
        "texts",
        nargs="+",
        metavar="TEXT",
        help="texts to embed; `-` reads one text per line from standard input",
    )
    embed.add_argument(
        "--model",
        help="model name or directory; default: EMBED_MODEL, else the database's default model "
        "(embeddings.default_model()), else gte-small [EMBED_MODEL]",
    )


def _search_options(search: argparse.ArgumentParser) -> None:
    search.add_argument("table", metavar="TABLE", help="a watched table, e.g. public.documents")
    search.add_argument("query", metavar="QUERY", help="what to look for, in plain words")
    search.add_argument("-k", type=int, default=5, help="how many rows (default 5)")
    search.add_argument("--column", help="embedding column, when the table has several")
    search.add_argument(
        "--filter",
        metavar="JSON",
        help='only rows whose columns match, e.g. \'{"tenant_id": 7, "published": true}\'',
    )
    search.add_argument(
        "--mode",
        choices=("auto", "vector", "hybrid"),
        default="auto",
        help="vector: by meaning; hybrid: fused with full-text search (embeddings.enable_fts);"
        " auto (default): hybrid where the table has full-text search",
    )
    # Hybrid search's tuning (worker/retrieval/fusion.py): unset, hybrid_search()'s defaults.
    search.add_argument(
        "--rrf-k",
        type=float,
        metavar="K",
        help="hybrid, --fusion rrf: the rank constant, score = weight / (K + rank) summed over"
        " both rankings (default 60; at least 0)",
    )
    search.add_argument(
        "--vector-weight",
        type=float,
        metavar="W",
        help="hybrid: the weight of the vector ranking (default 1; at least 0)",
    )
    search.add_argument(
        "--text-weight",
        type=float,
        metavar="W",
        help="hybrid: the weight of the full-text ranking (default 0.2 with --fusion convex,"
        " 2 with rrf; at least 0)",
    )
    search.add_argument(
        "--depth",
        type=int,
        metavar="N",
        help="hybrid: candidates taken from each ranking before fusing (default 100; 1 to 1000)",
    )
    search.add_argument(
        "--text-match",
        choices=("all", "any"),
        help="hybrid: the full-text ranking holds the rows with any word of QUERY, ranked by"
        " BM25 (any, the default), or with every word (all)",
    )
    search.add_argument(
        "--fusion",
        choices=("convex", "rrf"),
        help="hybrid: weigh the two rankings' scores (convex, the default) or their places"
        " (rrf: reciprocal rank fusion)",
    )
    # The rerank stage (worker/retrieval/rerank.py): unset, the table's (embeddings.set_rerank).
    rerank = search.add_mutually_exclusive_group()
    rerank.add_argument(
        "--rerank",
        metavar="NAME",
        help="reorder the first results with this reranker: a remote one registered with"
        " embeddings.register_reranker(), else a cross-encoder directory's name on"
        " EMBED_MODEL_PATH; default: the table's, set by embeddings.set_rerank()",
    )
    rerank.add_argument(
        "--no-rerank",
        dest="rerank",
        action="store_false",
        default=None,
        help="no rerank stage, even where the table has one",
    )
    search.add_argument(
        "--rerank-depth",
        type=int,
        metavar="N",
        help="how many results the reranker reorders (default: the table's, else 3 x k and"
        " at least 20; 1 to 200)",
    )
    search.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _sweep_options(sweep: argparse.ArgumentParser) -> None:
    sweep.add_argument(
        "--verify",
        action="store_true",
        help="also check a slice of each table's vectors against their current content",
    )
    sweep.add_argument("--max-rows", type=int, default=1000, help="rows per table (default 1000)")
    sweep.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _failures_options(failures: argparse.ArgumentParser) -> None:
    failures.add_argument(
        "table", nargs="?", metavar="TABLE", help="only this table's dead letters (default: all)"
    )
    failures.add_argument(
        "--id",
        dest="ids",
        type=int,
        action="append",
        metavar="ID",
        help="only the dead letter with this id (repeatable)",
    )
    failures.add_argument(
        "--retry",
        action="store_true",
        help="re-queue them (all, or those TABLE, --id and --limit choose)",
    )
    failures.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help="list at most N (default: 100 in the table; all in --json)",
    )
    failures.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _plan_options(plan: argparse.ArgumentParser) -> None:
    plan.add_argument("table", metavar="TABLE", help="a table, e.g. public.documents")
    plan.add_argument("--column", help="embedding column, when the table has several")
    plan.add_argument(
        "--model",
        help="plan a change to this model (every row); default: the table's model, for the "
        "rows that have no vector yet",
    )
    plan.add_argument(
        "--content",
        metavar="COLUMN",
        help="content column (or content function) of a table not watched",
    )
    plan.add_argument(
        "--tokens-per-row",
        type=float,
        metavar="N",
        help="average tokens per row, where they cannot be estimated (a content function)",
    )
    plan.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _model_actions(model: argparse.ArgumentParser) -> None:
    actions = model.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    actions.add_parser(
        "list",
        help="known models and which are present",
        description="List the registry models and model directories on EMBED_MODEL_PATH, "
        "with where each is found.",
        parents=[_global_options(argparse.SUPPRESS)],
    )
    download = actions.add_parser(
        "download",
        help="fetch a model from the Hugging Face hub",
        description="Download a registry model at its pinned revision into the cache, "
        "verifying every file's checksum.",
        parents=[_global_options(argparse.SUPPRESS, variant=False)],
    )
    download.add_argument("name", metavar="NAME", help="a registry model (see `model list`)")
    download.add_argument(
        "--variant",
        dest="download_variant",
        choices=("fp32", "int8", "all"),
        help="which ONNX file(s) to fetch (default: EMBED_MODEL_VARIANT)",
    )


def _deploy_options(deploy: argparse.ArgumentParser) -> None:
    from worker.cli.deploy import DIRECTORIES, FILES

    deploy.add_argument(
        "file",
        metavar="FILE",
        choices=(*FILES, *DIRECTORIES),
        help="; ".join(f"{name}: {what}" for name, (what, _) in {**FILES, **DIRECTORIES}.items()),
    )
    deploy.add_argument(
        "directory",
        metavar="DIR",
        nargs="?",
        type=Path,
        help="where `kubernetes` writes its files (required for it; the others print)",
    )


# The subcommands, in the order `--help` lists them: name, the line `--help` shows, whether it
# loads models (those that do not list the model options), and what adds its own options.
COMMANDS: tuple[tuple[str, str, bool, Callable[[argparse.ArgumentParser], None] | None], ...] = (
    ("migrate", "install or upgrade the database schema", False, _migrate_options),
    ("run", "run the worker", True, _run_options),
    ("status", "per watched table: rows, embedded, pending, failed, ETA", False, _status_options),
    ("embed", "print the embeddings of TEXT... as a JSON list", True, _embed_options),
    ("search", "rows of TABLE nearest in meaning to QUERY", True, _search_options),
    ("failures", "list dead-lettered jobs", False, _failures_options),
    ("sweep", "queue rows that lost their job or hold a stale vector", False, _sweep_options),
    ("doctor", "check for common problems and say what to do", True, None),
    (
        "plan",
        "estimate rows, tokens, requests and cost before a backfill or model change",
        False,
        _plan_options,
    ),
    ("model", "list or download models", True, _model_actions),
    (
        "deploy",
        "print a file an install needs (systemd unit, env file, alerts, dashboard), or write "
        "the Kubernetes kustomization into DIR",
        False,
        _deploy_options,
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embed-worker",
        description="Postgres-native embedding worker: keeps the embedding columns of watched "
        "tables up to date, from a pgmq queue, with a local ONNX model.",
        epilog="Each option also reads an environment variable (shown in brackets); the option "
        "wins. Options of the first two groups go before or after the command. Without "
        "DATABASE_URL or PG* variables, the local `make db` cluster is used.",
        parents=[_global_options(None)],
    )
    parser.add_argument("--version", action="version", version=f"embed-worker {__version__}")
    shared = {
        True: _global_options(argparse.SUPPRESS),
        False: _global_options(argparse.SUPPRESS, models=False),
    }
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, short, loads_models, add_options in COMMANDS:
        command = commands.add_parser(
            name, help=short, description=DESCRIPTIONS[name], parents=[shared[loads_models]]
        )
        if add_options is not None:
            add_options(command)
    return parser
