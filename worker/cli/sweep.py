"""`embed-worker sweep [--verify]`: one run of embeddings.sweep() (sql/60_sweep.sql), which
queues rows that lost their job; with `--verify`, also one slice of the verifying pass
(sql/64_verify.sql), which queues rows whose vector is not that of their current content and
definition. Bounded per call (`--max-rows` per target); schedule it (cron, a systemd timer) or
use `SELECT embeddings.schedule_sweep(verify => true)` where pg_cron is installed."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import psycopg

from worker import db, escapes, queries
from worker.cli import output


def run(conn: db.Connection, args: argparse.Namespace) -> dict[str, Any]:
    # What sweep() says beside the rows it returns (sql/60_sweep.sql): the dead letters of
    # deleted rows it resolved and whether more are left, a table whose step failed.
    said: list[str] = []

    def keep(diag: psycopg.errors.Diagnostic) -> None:
        if diag.message_primary:
            said.append(
                f"{(diag.severity_nonlocalized or 'NOTICE').lower()}: {diag.message_primary}"
            )

    conn.add_notice_handler(keep)
    try:
        with db.translated():
            row = conn.execute(
                queries.compose("sweep"), {"max_rows": args.max_rows, "verify": args.verify}
            ).fetchone()
    finally:
        conn.remove_notice_handler(keep)
    queued = int(row[0]) if row else 0
    with db.translated():
        found = conn.execute(queries.compose("verification")).fetchall()
    names = ("target", "target_id", "verified_rows", "last_verified", "pass_rows", "pass_started")
    return {
        "queued": queued,
        "said": said,
        "verification": [dict(zip(names, r, strict=True)) for r in found],
    }


def show(result: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        output.print_json(result)
        return
    for line in result["said"]:  # (on stderr: stdout is the result)
        print(escapes.visible(line), file=sys.stderr)
    print(f"queued {result['queued']:,} row(s)")
    rows = [
        [
            v["target"],
            f"{v['verified_rows']:,}" if v["verified_rows"] is not None else "-",
            v["last_verified"].strftime("%Y-%m-%d %H:%M:%S %Z") if v["last_verified"] else "never",
            f"{v['pass_rows']:,}" if v["pass_started"] else "-",
        ]
        for v in result["verification"]
    ]
    if rows:
        print()
        print(
            "\n".join(
                output.table_lines(
                    ["target", "verified (last pass)", "last pass finished", "this pass so far"],
                    rows,
                )
            )
        )
