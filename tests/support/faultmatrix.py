"""The fault matrix: what each cell of the fault-injection harness measured, as a table.

tests/integration/test_fault_matrix.py records one Cell per (step, fault); the integration
conftest prints the table at the end of the run and keeps it in pytest's cache
(`.pytest_cache/v/embed-worker/fault-matrix`), so the README's Reliability section can quote it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Cell:
    step: str
    fault: str
    rows: int  # rows with content at the end
    lost: int  # no vector, no job, no dead letter
    stale: int  # a vector, but not the one of the row's current content
    left_in_queue: int  # jobs left once the worker recovered (live retries only would be ok)
    dead_lettered: int
    worker_exit: int  # of the run the fault hit (1: the worker died of it)


RESULTS: dict[tuple[str, str], Cell] = {}
# tests/integration/test_schema_change_matrix.py: step = the schema change, fault = the moment
# of the batch it landed in.
SCHEMA_CHANGES: dict[tuple[str, str], Cell] = {}


def record(cell: Cell) -> None:
    RESULTS[(cell.step, cell.fault)] = cell


def record_schema_change(cell: Cell) -> None:
    SCHEMA_CHANGES[(cell.step, cell.fault)] = cell


def as_json() -> list[dict[str, object]]:
    return [asdict(c) for c in RESULTS.values()] + [
        {**asdict(c), "kind": "schema change"} for c in SCHEMA_CHANGES.values()
    ]


def render(
    results: dict[tuple[str, str], Cell] | None = None, first: str = "step of the batch"
) -> str:
    """A Markdown table: one row per step, one column per fault, "lost / stale" per cell."""
    results = RESULTS if results is None else results
    steps = list(dict.fromkeys(step for step, _ in results))
    faults = list(dict.fromkeys(fault for _, fault in results))
    lines = [
        f"| {first} | " + " | ".join(faults) + " |",
        "|---|" + "---|" * len(faults),
    ]
    for step in steps:
        cells = []
        for fault in faults:
            c = results.get((step, fault))
            cells.append(
                "-"
                if c is None
                else f"{c.lost} lost, {c.stale} stale, {c.left_in_queue} queued (of {c.rows})"
            )
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_schema_changes() -> str:
    """The schema-change rows: one row per change, one column per moment it landed in."""
    return render(SCHEMA_CHANGES, "schema change while a batch is in flight")
