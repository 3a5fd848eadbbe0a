"""`embed-worker failures [TABLE] [--id ID]... [--retry]`: the dead-lettered jobs
(embeddings.failures), all or one table's or some ids', listed a page at a time, or re-queued
(embeddings.retry_failures(), sql/50_status.sql): an operator who fixed one table's cause, or
one row's, re-queues those and leaves the rest."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import Any

from worker import db, exceptions, exits, queries
from worker.cli import hints, output
from worker.config import PG_INTEGER_MAX
from worker.retrieval.targets import table_targets

KEYS = ("id", "target", "row_key", "attempts", "last_error", "failed_at")
PAGE = 100  # rows the table view shows without --limit
PG_BIGINT_MAX = 2**63 - 1  # embeddings.failures.id


def check(args: argparse.Namespace) -> None:
    """ConfigError for options out of their bounds, before anything connects."""
    if args.limit is not None and not 1 <= args.limit <= PG_INTEGER_MAX:
        raise exceptions.ConfigError(f"--limit must be from 1 to {PG_INTEGER_MAX}")
    if any(abs(i) > PG_BIGINT_MAX for i in args.ids or ()):  # ids are bigints: one past is none
        raise exceptions.ConfigError(f"--id must be at most {PG_BIGINT_MAX}")


def run(conn: db.Connection, args: argparse.Namespace, dsn: str) -> int:
    with db.translated():
        chosen = {"targets": _targets(conn, args.table), "ids": args.ids}
        _refuse_unknown_ids(conn, chosen, args)
        if args.retry:
            # --retry re-queues what the same command without it lists: --limit N included, so
            # a user who narrowed the list to what they checked re-queues no more than that
            every = args.table is None and args.ids is None and args.limit is None
            ids = None if every else [row[0] for row in _listed(conn, chosen, args.limit)]
            retried = conn.execute(queries.get("retry_failures"), {"ids": ids}).fetchone()
            print(f"re-queued {retried[0] if retried else 0} dead-lettered job(s)", file=sys.stderr)
            return exits.OK
        default = None if args.json else PAGE
        rows = _listed(conn, chosen, args.limit if args.limit is not None else default)
    if args.json:
        output.print_json([dict(zip(KEYS, r[:6], strict=True)) for r in rows])
    else:
        _show(rows, _retry_command(args, dsn))
    return exits.OK


def _targets(conn: db.Connection, table: str | None) -> list[int] | None:
    """The ids of `table`'s targets (None: no table given): of a chunk or side table, its
    target's, whose rows its rows are (said on stderr); or ConfigError naming what the caller
    may have meant."""
    if table is None:
        return None
    name, ids, store_of = table_targets(conn, table)
    if not ids and store_of is not None and store_of.target_id is not None:
        said = f"its dead letters are those of {store_of.source}, listed here"
        print(store_of.said(name, said), file=sys.stderr)
        return [store_of.target_id]
    if not ids:
        raise exceptions.ConfigError(f"{name} is not watched: it has no dead letters")
    return ids


def _refuse_unknown_ids(
    conn: db.Connection, chosen: dict[str, Any], args: argparse.Namespace
) -> None:
    """ConfigError naming the --id values that are no dead letter (of TABLE, when given),
    before anything is listed or re-queued: a mistyped id was "re-queued 0", exit 0, beside the
    others, and listed as "no dead-lettered jobs", exit 0, as if that row had none."""
    if not args.ids:
        return
    known = {row[0] for row in _listed(conn, chosen, None)}
    unknown = list(dict.fromkeys(i for i in args.ids if i not in known))
    if unknown:
        of = f" of {args.table}" if args.table is not None else ""
        done = ": nothing was re-queued" if args.retry else ""
        raise exceptions.ConfigError(
            f"no dead letter with id {', '.join(map(str, unknown))}{of}{done}"
            " (`failures` lists them)"
        )


def _listed(conn: db.Connection, chosen: dict[str, Any], limit: int | None) -> list[Any]:
    """The chosen dead letters, oldest first, at most `limit`, each with how many were chosen."""
    return conn.execute(queries.get("list_failures"), {**chosen, "limit": limit}).fetchall()


def _retry_command(args: argparse.Namespace, dsn: str) -> str:
    chosen = [shlex.quote(args.table)] if args.table is not None else []
    chosen += [f"--id {i}" for i in args.ids or ()]
    chosen += [f"--limit {args.limit}"] if args.limit is not None else []  # what was shown
    return hints.command(" ".join(["failures", *chosen, "--retry"]), dsn)


def _show(rows: list[Any], retry: str) -> None:
    if not rows:
        print("no dead-lettered jobs")
        return
    output.print_table(
        ["id", "target", "row key", "attempts", "failed at", "last error"],
        [
            [
                str(r[0]),
                r[1],
                json.dumps(r[2]),
                str(r[3]),
                f"{r[5]:%Y-%m-%d %H:%M:%S}",
                output.preview(r[4], 70),
            ]
            for r in rows
        ],
    )
    total = int(rows[0][6])
    shown = f"{total} dead-lettered" + (
        f", the first {len(rows)} shown (--limit)" if len(rows) < total else ""
    )
    print(f"\n{shown}; re-queue with: {retry}")
