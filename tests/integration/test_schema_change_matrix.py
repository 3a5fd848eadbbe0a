"""Schema changes while a batch is in flight: the fault matrix's schema-change rows.

Each cell is one schema change of the watched table (issue 12 §4) crossed with the moment of a
batch it lands in:

  moments  before_load   the batch is leased and the worker has read the registry (old names);
                         the DDL commits before the content is loaded
           before_write  the content is loaded and about to be embedded; the DDL commits before
                         the vectors are written (they are written under the old names)

Scenario per cell, as in test_fault_matrix.py: rows embedded once, every row's content changed
(clear_on_update => false: a job acknowledged without its write leaves a *stale* vector), new rows
inserted (one acknowledged without its write is *lost*); the DDL lands in the batch; then the
worker recovers (leases expired, runs until the queue is empty). Asserted per cell: 0 rows lost,
0 stale, nothing left queued, nothing dead-lettered, and no application statement failed (an
INSERT and an UPDATE under the new names right after the DDL). The rows are printed with the fault
matrix at the end of the run (tests/support/faultmatrix.py).

Every cell runs once per store of the vectors (tests/support/stores.py): in the row, and in a side
table (its rows marked "side table"; renaming the embedding column is a change of the side table
there, not of the watched table, and is left out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.support import faultmatrix, stores
from tests.support.fault_scenario import (
    NEW_ROWS,
    ROWS,
    Scenario,
    assert_nothing_lost,
    one_shot,
)
from worker.pipeline import faults

Conn = psycopg.Connection[Any]

MOMENTS = {"before_load": "load", "before_write": "embed"}  # moment -> worker.pipeline.faults point


@dataclass(frozen=True)
class Names:
    """Where the watched table's parts are after the change."""

    schema: str = "public"
    table: str = "docs"
    key: str = "id"
    content: str = "body"
    embedding: str = "embedding"

    def q(self, template: str, **more: sql.Composable) -> sql.Composed:
        return sql.SQL(template).format(
            **more,
            table=sql.Identifier(self.schema, self.table),
            key=sql.Identifier(self.key),
            content=sql.Identifier(self.content),
            embedding=sql.Identifier(self.embedding),
        )


@dataclass(frozen=True)
class Change:
    statements: tuple[str, ...]
    after: Names
    rewatch: bool = False  # the user's fix for a deferral: watch() again
    side_only: bool = False  # a change of a side table (tests/support/stores.py)


CHANGES = {
    "rename content column": Change(
        ("ALTER TABLE docs RENAME COLUMN body TO content",), Names(content="content")
    ),
    "rename key column": Change(
        ("ALTER TABLE docs RENAME COLUMN id TO doc_id",), Names(key="doc_id")
    ),
    "rename embedding column": Change(
        ("ALTER TABLE docs RENAME COLUMN embedding TO vec",), Names(embedding="vec")
    ),
    "rename the side table": Change(
        ("ALTER TABLE docs_embeddings RENAME TO doc_vectors",), Names(), side_only=True
    ),
    "rename table": Change(("ALTER TABLE docs RENAME TO papers",), Names(table="papers")),
    "move to another schema": Change(
        ("CREATE SCHEMA archive", "ALTER TABLE docs SET SCHEMA archive"), Names(schema="archive")
    ),
    "retype content (varchar(2000) and back)": Change(
        (
            "ALTER TABLE docs ALTER COLUMN body TYPE varchar(2000)",
            "ALTER TABLE docs ALTER COLUMN body TYPE text",
        ),
        Names(),
    ),
    "drop + re-add content, watch() again": Change(
        (
            "ALTER TABLE docs DROP COLUMN body",
            "ALTER TABLE docs ADD COLUMN body text",
            "UPDATE docs SET body = 'third text of row ' || id",
        ),
        Names(),
        rewatch=True,
    ),
}


def application_writes(conn: Conn, names: Names) -> None:
    """The application right after the change, under the new names: must not fail."""
    conn.execute(
        names.q("INSERT INTO {table} ({key}, {content}) VALUES (%s, 'written after the change')"),
        (ROWS + NEW_ROWS + 1,),
    )
    conn.execute(
        names.q("UPDATE {table} SET {content} = 'edited after the change' WHERE {key} = 2")
    )


@pytest.mark.parametrize("store", stores.STORES)
@pytest.mark.parametrize("moment", list(MOMENTS))
@pytest.mark.parametrize("change", list(CHANGES))
def test_a_schema_change_in_flight_loses_nothing(
    change: str, moment: str, store: str, fault_scenario: Scenario, admin: Conn
) -> None:
    conn, model = fault_scenario.conn, fault_scenario.model
    ddl = CHANGES[change]
    if store == "side" and ddl.after.embedding != "embedding":
        pytest.skip("the watched table of a side-table target has no embedding column")
    if store == "row" and ddl.side_only:
        pytest.skip("a change of the side table")
    fault_scenario.embed_then_change(store)

    applied: list[bool] = []

    def apply_change() -> None:
        for statement in ddl.statements:
            admin.execute(statement)
        if ddl.rewatch:
            admin.execute(
                "SELECT embeddings.watch('docs', 'body', model => %s, clear_on_update => false)",
                (model,),
            )  # the store left out: the target keeps its own
        application_writes(admin, ddl.after)
        applied.append(True)

    with faults.injected(MOMENTS[moment], one_shot(apply_change)):
        code = fault_scenario.run_worker()
    assert applied == [True], "the change never landed in a batch"

    fault_scenario.recover()
    names = ddl.after
    rows = conn.execute(
        names.q(
            "SELECT {key}, {content}::text, {embedding}::real[] FROM {vectors}"
            " WHERE {content} ~ '[^[:space:]]' ORDER BY {key}",
            vectors=stores.vectors(conn, store, sql.Identifier(names.schema, names.table)),
        )
    ).fetchall()
    label = change if store == "row" else f"{change} (side table)"
    cell = fault_scenario.measure(rows, label, moment, code)
    faultmatrix.record_schema_change(cell)
    assert_nothing_lost(cell, ROWS + NEW_ROWS + 1)
    assert conn.execute("SELECT problem FROM embeddings.targets").fetchone() == (None,)
