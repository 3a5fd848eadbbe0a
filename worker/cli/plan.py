"""`embed-worker plan`: what embedding a table will take, before it starts: rows, tokens,
requests and, for a remote model with a price, cost.

- `plan TABLE` (a watched table): its rows without a vector, with the model it has (a backfill:
  `watch()` of existing rows, `failures --retry`, a sweep).
- `plan TABLE --model M`: all its rows with model M (a model change: watch(..., model => M)).
- `plan TABLE --content COLUMN --model M`: a table not watched yet.

Tokens are estimated, not counted: counting would mean evaluating the table's content (a
content function is the table owner's code, which `plan`, like `status`, never runs). The
average content size comes from the planner's statistics of the content column (pg_stats, as
the caller may read them), else from a sample of up to SAMPLE_ROWS rows of the column read with
the caller's own rights; bytes become tokens as the worker's estimate for remote models does
(worker/models/remote/tokens.py: one per 3 bytes, which over-counts English text by about a
third), capped at the model's token limit per input. A content function, or a column the caller
cannot read, needs `--tokens-per-row`. Requests follow the model's limits (inputs and tokens per
request); cost is tokens x price_per_million_tokens / 1e6, in that price's currency.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

from worker import db, exceptions, queries
from worker.cli import output
from worker.models.remote.tokens import BYTES_PER_TOKEN

SAMPLE_ROWS = 1000


@dataclass
class Plan:
    table: str
    model: str
    provider: str
    rows: int
    tokens_per_row: float | None
    tokens_from: str  # how tokens_per_row was found
    tokens: int | None
    requests: int | None
    price_per_million_tokens: float | None
    cost: float | None


def make(
    conn: db.Connection,
    table: str,
    *,
    column: str | None = None,
    model: str | None = None,
    content: str | None = None,
    tokens_per_row: float | None = None,
) -> Plan:
    with db.translated():
        target = _target(conn, table, column)
        if target is None and (content is None or model is None):
            raise exceptions.ConfigError(
                f"{table} is not watched: name its content column and the model "
                "(--content COLUMN --model M) to plan watching it"
            )
        name = model if model is not None else (target or {})["model"]
        found = conn.execute(queries.get("plan_model"), {"model": name}).fetchone()
        if found is None:
            raise exceptions.ConfigError(f"unknown model {name!r}: see `embed-worker model list`")
        _, provider, max_tokens, max_inputs, max_request_tokens, price = found
        rows = _rows(conn, table, target, changing=model is not None and target is not None)
        content_column = content or (target["content_column"] if target else None)
        if tokens_per_row is not None:
            per_row, where = float(tokens_per_row), "given (--tokens-per-row)"
        elif content_column is None:
            per_row, where = None, "unknown: a content function (pass --tokens-per-row)"
        else:
            per_row, where = _tokens_per_row(conn, table, content_column, max_tokens)
    tokens = math.ceil(rows * per_row) if per_row is not None else None
    requests = None
    if provider != "local":
        inputs = max_inputs or 1
        requests = math.ceil(rows / inputs)
        if tokens is not None and max_request_tokens:
            requests = max(requests, math.ceil(tokens / max_request_tokens))
    price_f = float(price) if price is not None else None
    cost = tokens * price_f / 1e6 if tokens is not None and price_f is not None else None
    return Plan(
        table=table,
        model=name,
        provider=provider,
        rows=rows,
        tokens_per_row=round(per_row, 1) if per_row is not None else None,
        tokens_from=where,
        tokens=tokens,
        requests=requests,
        price_per_million_tokens=price_f,
        cost=round(cost, 6) if cost is not None else None,
    )


def show(plan: Plan, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(asdict(plan), indent=2))
        return
    cost = (
        f"{plan.cost:.4f} (at {plan.price_per_million_tokens:g} per million tokens)"
        if plan.cost is not None
        else (
            "none: a local model runs on the worker's CPU"
            if plan.provider == "local"
            else "unknown: register the model with price_per_million_tokens => ..."
        )
    )
    output.print_table(
        ["", ""],
        [
            ["table", plan.table],
            ["model", f"{plan.model} ({plan.provider})"],
            ["rows to embed", f"{plan.rows:,}"],
            [
                "tokens",
                f"~{plan.tokens:,} (~{plan.tokens_per_row:g} per row, {plan.tokens_from})"
                if plan.tokens is not None
                else plan.tokens_from,
            ],
            ["requests", f"~{plan.requests:,}" if plan.requests is not None else "-"],
            ["cost", cost],
        ],
    )


def _target(conn: db.Connection, table: str, column: str | None) -> dict[str, Any] | None:
    cursor = conn.execute(queries.get("plan_targets"), {"table": table, "column": column})
    columns = [c.name for c in cursor.description or ()]
    found = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    if len(found) > 1:
        raise exceptions.ConfigError(
            f"{table} has several watched columns: name one with --column "
            f"({', '.join(r['embedding_column'] for r in found)})"
        )
    return found[0] if found else None


def _rows(conn: db.Connection, table: str, target: dict[str, Any] | None, changing: bool) -> int:
    """Rows to embed: all of them for a new or changed model, else those without a vector."""
    if target is not None:
        row = conn.execute(queries.get("plan_target_rows"), {"target_id": target["id"]}).fetchone()
        if row is not None:
            total, embedded = int(row[0] or 0), int(row[1] or 0)
            return total if changing else max(total - embedded, 0)
    row = conn.execute(queries.get("plan_estimated_rows"), {"table": table}).fetchone()
    estimate = int(row[0]) if row else 0
    if estimate > 0:
        return estimate
    counted = conn.execute(
        queries.compose("plan_count_rows", table=sql.SQL(_regclass(conn, table)))
    ).fetchone()
    return int(counted[0]) if counted else 0


def _tokens_per_row(
    conn: db.Connection, table: str, column: str, max_tokens: int
) -> tuple[float | None, str]:
    stats = conn.execute(
        queries.get("plan_column_width"), {"table": table, "column": column}
    ).fetchone()
    if stats is not None and stats[0]:
        width, where = float(stats[0]), "from the column's statistics"
    else:
        try:
            with conn.transaction():
                found = conn.execute(
                    queries.compose(
                        "plan_sample_width",
                        column=sql.Identifier(column),
                        table=sql.SQL(_regclass(conn, table)),
                    ),
                    {"rows": SAMPLE_ROWS},
                ).fetchone()
        except psycopg.Error:  # no SELECT on it, say: the caller's rights decide
            found = None
        if found is None or found[0] is None:
            return None, f"unknown: cannot read {table}.{column} (pass --tokens-per-row)"
        width, where = float(found[0]), f"from a sample of up to {SAMPLE_ROWS} rows"
    return min(width / BYTES_PER_TOKEN, float(max_tokens)), where


def _regclass(conn: db.Connection, table: str) -> str:
    """The table's name as Postgres quotes it (regclass's output), or ConfigError."""
    row = conn.execute(queries.get("regclass_text"), {"table": table}).fetchone()
    if row is None or row[0] is None:
        raise exceptions.ConfigError(f"no table {table}")
    return str(row[0])
