"""`embed-worker sweep [--verify]`: one run of embeddings.sweep() (sql/60_sweep.sql), which
queues rows that lost their job; with `--verify`, also one slice of the verifying pass
(sql/64_verify.sql), which queues rows whose vector is not that of their current content and
definition. Bounded per call (`--max-rows` per target); schedule it (cron, a systemd timer) or
use `SELECT embeddings.schedule_sweep(verify => true)` where pg_cron is installed."""

from __future__ import annotations

import argparse
from typing import Any

from worker import db, queries
from worker.cli import output


def run(conn: db.Connection, args: argparse.Namespace) -> dict[str, Any]:
    with db.translated():
        row = conn.execute(
            queries.compose("sweep"), {"max_rows": args.max_rows, "verify": args.verify}
        ).fetchone()
        queued = int(row[0]) if row else 0
        found = conn.execute(queries.compose("verification")).fetchall()
    names = ("target", "target_id", "verified_rows", "last_verified", "pass_rows", "pass_started")
    return {"queued": queued, "verification": [dict(zip(names, r, strict=True)) for r in found]}


def show(result: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        output.print_json(result)
        return
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
