"""Named points in a batch's life where the test suite injects faults.

The fault-injection harness (tests/integration/test_fault_matrix.py) sets a handler on a point
to raise, or to kill connections, exactly there. In production no handler is set and reaching a
point costs one dict lookup.

Points, in a batch's order: "leased" (the read committed), "load" (before loading content),
"embed" (before inference), "after_vectors" (inside the write transaction, vectors stored, jobs
not yet settled), "before_commit" (everything done but COMMIT). And "read_empty": the fetcher's
read found no job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

POINTS = ("leased", "load", "embed", "after_vectors", "before_commit", "read_empty")

_handlers: dict[str, Callable[[], None]] = {}


def reached(point: str) -> None:
    handler = _handlers.get(point)
    if handler is not None:
        handler()


@contextmanager
def injected(point: str, handler: Callable[[], None]) -> Iterator[None]:
    """Calls `handler` each time `point` is reached, for the duration of the block."""
    if point not in POINTS:
        raise ValueError(f"unknown fault point {point!r}; known: {', '.join(POINTS)}")
    _handlers[point] = handler
    try:
        yield
    finally:
        _handlers.pop(point, None)
