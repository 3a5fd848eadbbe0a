"""`embed-worker plan`: what embedding a table will take, before it starts: rows, tokens,
requests and, for a remote model with a price, cost.

- `plan TABLE` (a watched table): its rows without a vector, with the model it has (a backfill:
  `watch()` of existing rows, `failures --retry`, a sweep).
- `plan TABLE --model M`: all its rows with model M (a model change: watch(..., model => M)).
- `plan TABLE --content COLUMN --model M`: a table not watched yet.

Plan evaluates nothing the table's owner wrote: not a content function, not a cast of the
owner's types to text, not a view, not a row-level security policy, each of which would run
with the caller's rights (an operator's, often a superuser's: docs/security.md). So it reads
no row of a table not watched: its rows and tokens are estimates from the catalog (pg_class,
the statistics system, pg_stats), which ANALYZE fills, as the table's owner. A watched table's
rows are as `embed-worker status` has them, from embeddings_internal.target_status(), which
evaluates nothing of its owner's: counted up to embeddings.status_exact_rows (5,000), estimated
beyond. Where the catalog knows nothing yet (a table never analyzed), the figure is unknown
and plan says `ANALYZE <table>` gives one; plan itself changes nothing. Only tables are planned,
as only tables are watched: a view, a foreign table and the like are refused unread.

Bytes become tokens as the worker's estimate for remote models does
(worker/models/remote/tokens.py: one per 3 bytes, which over-counts English text by about a
third), capped at the model's token limit per input but for a chunked target, whose rows are
embedded whole in overlapping chunks. The statistics count a value stored out of line (TOAST,
over about 2 kB) as its pointer: the table's out-of-line bytes a row are added. A content
function, a column of files (bytea: the bytes are not the text), or a column whose statistics
the caller cannot read, needs `--tokens-per-row`. Requests follow the model's
limits (inputs and tokens per request); cost is tokens x price_per_million_tokens / 1e6, in
that price's currency.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from worker import db, exceptions, queries
from worker.cli import output
from worker.models.remote.tokens import BYTES_PER_TOKEN
from worker.retrieval.targets import NOT_A_NAME, no_table, not_watched, unwatchable

# pg_class.relkind of what plan refuses (watch() takes 'r' and 'p' only), in words.
RELATION_KINDS = {
    "v": "a view",
    "m": "a materialized view",
    "f": "a foreign table",
    "S": "a sequence",
    "i": "an index",
    "I": "a partitioned index",
    "t": "a TOAST table",
    "c": "a composite type",
}
COUNTED = "counted"
ESTIMATED = "estimated from the table's statistics"
# Out-of-line bytes a row from which plan says it counted them (below: TOAST's own overhead).
TOASTED_BYTES = 64
STATISTICS_AND_TOAST = (
    "from the column's statistics and the table's out-of-line values: compressed, and every"
    " large column's"
)
FILES = (
    "unknown: a file's text is known once the worker has read it (its bytes are not its text:"
    " pass --tokens-per-row)"
)


@dataclass
class Plan:
    table: str
    model: str
    provider: str
    rows: int | None  # None: unknown (rows_from says why)
    rows_from: str  # how rows was found
    tokens_per_row: float | None
    tokens_from: str  # how tokens_per_row was found
    chunks: int | None  # a chunked target's: the chunks its rows make (None: not chunked, unknown)
    chunking: str | None  # a chunked target's chunk size and overlap, said
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
        name, row_type = _relation(conn, table)
        target = _target(conn, table, column)
        refused = unwatchable(conn, table, "plan") if target is None else None
        if refused is not None:  # a chunk table, a partition of a watched table
            raise exceptions.ConfigError(refused)
        if target is None and column is not None and _watched(conn, table):
            # watched with other columns: said as search says it (they are named)
            raise exceptions.ConfigError(not_watched(conn, table, column))
        if target is None and (content is None or model is None):
            raise exceptions.ConfigError(
                f"{table} is not watched: name its content column and the model "
                "(--content COLUMN --model M) to plan watching it"
            )
        model_name = model if model is not None else (target or {})["model"]
        found = conn.execute(queries.get("plan_model"), {"model": model_name}).fetchone()
        if found is None:
            raise exceptions.ConfigError(
                f"unknown model {model_name!r}: see `embed-worker model list`"
            )
        _, provider, max_tokens, max_inputs, max_request_tokens, price = found
        rows, rows_from = _rows(conn, table, name, target, changing=model is not None)
        if target is not None:
            content_column = target["content_column"]
        else:
            assert content is not None
            content_column = _content_column(conn, table, name, row_type, content)
        chunking = _chunking(target)
        cap = None if chunking else max_tokens  # a chunked row is embedded whole
        per_row, where = _per_row(
            conn, table, name, target, content_column, given=tokens_per_row, cap=cap
        )
    inputs, per_input = rows, per_row  # what the model is given: a row each, or its chunks
    if chunking:  # as many chunks as the tokens make: unknown while they are
        inputs, per_input = None, None
        if per_row is not None and rows is not None:
            inputs, per_input = _chunks(rows, per_row, *chunking)
    tokens = math.ceil(inputs * per_input) if per_input is not None and inputs is not None else None
    requests = None
    if provider != "local" and inputs is not None:
        requests = math.ceil(inputs / (max_inputs or 1))
        if tokens is not None and max_request_tokens:
            requests = max(requests, math.ceil(tokens / max_request_tokens))
    price_f = float(price) if price is not None else None
    cost = tokens * price_f / 1e6 if tokens is not None and price_f is not None else None
    return Plan(
        table=table,
        model=model_name,
        provider=provider,
        rows=rows,
        rows_from=rows_from,
        tokens_per_row=round(per_row, 1) if per_row is not None else None,
        tokens_from=where,
        chunks=inputs if chunking else None,
        chunking=f"of at most {chunking[0]} tokens, {chunking[1]} overlapping"
        if chunking
        else None,
        tokens=tokens,
        requests=requests,
        price_per_million_tokens=price_f,
        cost=round(cost, 6) if cost is not None else None,
    )


def show(plan: Plan, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(asdict(plan), indent=2))
        return
    output.print_fields(
        [
            ("table", plan.table),
            ("model", f"{plan.model} ({plan.provider})"),
            # (what they say may hold a statement to run: its names shown as they paste)
            ("rows to embed", output.visible_sql(_rows_line(plan))),
            *([("chunks", _chunks_line(plan))] if plan.chunking else []),
            ("tokens", output.visible_sql(_tokens_line(plan))),
            ("requests", f"~{plan.requests:,}" if plan.requests is not None else "-"),
            ("cost", _cost_line(plan)),
        ]
    )


def _rows_line(plan: Plan) -> str:
    if plan.rows is None:
        return plan.rows_from
    if plan.rows_from == COUNTED:
        return f"{plan.rows:,}"
    return f"~{plan.rows:,} ({plan.rows_from})"


def _chunks_line(plan: Plan) -> str:
    if plan.chunks is None:
        return f"unknown ({plan.chunking})"
    return f"~{plan.chunks:,} ({plan.chunking})"


def _tokens_line(plan: Plan) -> str:
    if plan.tokens_per_row is None:
        return plan.tokens_from
    per_row = f"~{plan.tokens_per_row:g} per row, {plan.tokens_from}"
    if plan.tokens is None:  # the rows are unknown
        return f"unknown ({per_row})"
    return f"~{plan.tokens:,} ({per_row})"


def _cost_line(plan: Plan) -> str:
    if plan.cost is not None:
        return f"{plan.cost:.4f} (at {plan.price_per_million_tokens:g} per million tokens)"
    if plan.provider == "local":
        return "none: a local model runs on the worker's CPU"
    if plan.price_per_million_tokens is None:
        return "unknown: register the model with price_per_million_tokens => ..."
    return "unknown: the tokens are"


def _relation(conn: db.Connection, table: str) -> tuple[str, str]:
    """The table's name as Postgres quotes it and its row type's, or ConfigError for no table
    or for a relation watch() does not take: a view's rows come from running it (the functions
    it calls would run as the caller), a foreign table's from its server. Neither is read."""
    try:
        row = conn.execute(queries.get("plan_relation"), {"table": table}).fetchone()
    except NOT_A_NAME as exc:
        raise exceptions.ConfigError(no_table(conn, table, watched=False, error=exc)) from None
    if row is None:
        raise exceptions.ConfigError(no_table(conn, table, watched=False))
    name, kind, row_type = str(row[0]), str(row[1]), str(row[2])
    if kind not in ("r", "p"):
        raise exceptions.ConfigError(
            f"{name} is {RELATION_KINDS.get(kind, f'not a table (relkind {kind})')}: "
            "embeddings.watch() takes tables only, and plan reads none of its rows"
        )
    return name, row_type


def _target(conn: db.Connection, table: str, column: str | None) -> dict[str, Any] | None:
    found = (
        conn.cursor(row_factory=dict_row)
        .execute(queries.get("plan_targets"), {"table": table, "column": column})
        .fetchall()
    )
    if len(found) > 1:
        raise exceptions.ConfigError(
            f"{table} has several watched columns: name one with --column "
            f"({', '.join(r['embedding_column'] for r in found)})"
        )
    return found[0] if found else None


def _watched(conn: db.Connection, table: str) -> bool:
    """Whether any column of `table` is watched."""
    return bool(
        conn.execute(queries.get("plan_targets"), {"table": table, "column": None}).fetchall()
    )


def _rows(
    conn: db.Connection, table: str, name: str, target: dict[str, Any] | None, changing: bool
) -> tuple[int | None, str]:
    """Rows to embed: all of them for a new or changed model, else those without a vector; of a
    watched table, less its cleared rows (NULL or blank content: no vector is made for them,
    as status counts them; unknown for a content function); and how they were found."""
    if target is not None:
        row = conn.execute(queries.get("plan_target_rows"), {"target_id": target["id"]}).fetchone()
        if row is not None and row[0] is not None:
            wanted, embedded = int(row[0]) - int(row[3] or 0), int(row[1] or 0)
            found = ESTIMATED if row[2] else COUNTED
            return max(wanted if changing else wanted - embedded, 0), found
    row = conn.execute(queries.get("plan_estimated_rows"), {"table": table}).fetchone()
    if row is None or row[0] is None:
        return None, f"unknown: no statistics of {name} yet (run ANALYZE {name})"
    return int(row[0]), ESTIMATED


def _content_column(
    conn: db.Connection, table: str, name: str, row_type: str, content: str
) -> str | None:
    """The content column `content` names (None: a content function), as watch() reads it:
    a column of a text type, else a function of the row type. ConfigError for anything else
    (watch() would refuse it too)."""
    found = conn.execute(
        queries.get("plan_content_column"), {"table": table, "column": content}
    ).fetchone()
    if found is not None:
        if not found[1]:
            raise exceptions.ConfigError(
                f"content column {name}.{_column_name(conn, content)} has type {found[0]}, "
                "not text: watch() takes a text column, or a content function that returns text"
            )
        return content
    try:
        with conn.transaction():  # a name that is no valid function name raises
            function = conn.execute(
                queries.get("plan_content_function"), {"function": content, "row_type": row_type}
            ).fetchone()
    except psycopg.Error:
        function = None
    if function is None or function[0] is None:
        raise exceptions.ConfigError(
            f"{name} has no column {_column_name(conn, content)}, and there is no function "
            f"{content}({row_type}) (a content function)"
        )
    return None


def _per_row(
    conn: db.Connection,
    table: str,
    name: str,
    target: dict[str, Any] | None,
    content_column: str | None,
    *,
    given: float | None,
    cap: int | None,
) -> tuple[float | None, str]:
    """The tokens of a row's content (at most `cap`), and how they were found."""
    if given is not None:
        return float(given), "given (--tokens-per-row)"
    if content_column is None:
        return None, "unknown: a content function (pass --tokens-per-row)"
    if (target or {}).get("content_bytes"):
        return None, FILES
    return _tokens_per_row(conn, table, name, content_column, cap)


def _chunking(target: dict[str, Any] | None) -> tuple[int, int] | None:
    """A chunked target's chunk size and overlap in tokens; None for one vector a row."""
    if target is None or target.get("chunk_tokens") is None:
        return None
    return int(target["chunk_tokens"]), int(target["chunk_overlap"] or 0)


def _chunks(rows: int, per_row: float, size: int, overlap: int) -> tuple[int, float]:
    """The chunks `rows` of `per_row` tokens make (worker/pipeline/chunking.py: each starts
    about `size - overlap` tokens after the one before) and their average tokens: the overlap
    is embedded twice. Averages: rows of very different lengths make more chunks than this."""
    if per_row <= size:
        return rows, per_row
    each = math.ceil((per_row - overlap) / max(size - overlap, 1))
    return rows * each, (per_row + (each - 1) * overlap) / each


def _column_name(conn: db.Connection, column: str) -> str:
    """`column` as a statement writes it (`"Body Text"`, `"order"`, `body`): after `name`, the
    table's name as Postgres quotes it, what plan prints is a name someone may paste."""
    row = conn.execute(queries.get("plan_column_name"), {"column": column}).fetchone()
    assert row is not None
    return str(row[0])


def _tokens_per_row(
    conn: db.Connection, table: str, name: str, column: str, max_tokens: int | None
) -> tuple[float | None, str]:
    stats = conn.execute(
        queries.get("plan_column_width"), {"table": table, "column": column}
    ).fetchone()
    if stats is None or stats[0] is None:
        return None, (
            f"unknown: no statistics of {name}.{_column_name(conn, column)} you may read "
            f"(run ANALYZE {name}, or pass --tokens-per-row)"
        )
    out_of_line = float(stats[1] or 0)
    per_row = (float(stats[0]) + out_of_line) / BYTES_PER_TOKEN
    if max_tokens is not None:
        per_row = min(per_row, float(max_tokens))
    if out_of_line < TOASTED_BYTES:
        return per_row, "from the column's statistics"
    return per_row, STATISTICS_AND_TOAST
