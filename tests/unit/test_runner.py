"""The worker's own bookkeeping, without a database: batches in flight counted in one place,
and no method that only hands the Worker to a module function."""

from __future__ import annotations

import ast
import inspect
import textwrap

from worker.config import Settings
from worker.pipeline import jobs
from worker.pipeline.batch import Batch
from worker.pipeline.lanes import Lanes
from worker.process import runner
from worker.process.runner import Worker


def test_the_lanes_count_every_batch_in_flight_once() -> None:
    lanes = Lanes("embedding_jobs", 32)
    live, backfill = Batch(jobs=[], lane=jobs.LIVE), Batch(jobs=[], lane=jobs.BACKFILL)
    assert lanes.drained() and lanes.backfill_room()
    lanes.begin(live)
    assert not lanes.drained() and lanes.backfill_room()
    lanes.begin(backfill)
    assert not lanes.backfill_room()
    lanes.end(live)
    assert not lanes.drained() and not lanes.backfill_room()
    lanes.end(backfill)
    assert lanes.drained() and lanes.backfill_room()


def test_the_worker_is_drained_when_its_lanes_are() -> None:
    """The fetcher's "nothing in flight" (for waiting in the database, for --once's end) is the
    lanes' count: a batch begun by the fetcher is in flight for both, with no second count to
    drift from the first."""
    worker = Worker(Settings(), once=True, progress=False, handle_signals=False)
    try:
        batch = Batch(jobs=[], lane=jobs.BACKFILL)
        worker.fetcher.begin(batch)
        assert not worker.lanes.drained() and not worker.lanes.backfill_room()
        assert not hasattr(worker, "_in_flight")
        worker.fetcher.end(batch)
        assert worker.lanes.drained() and worker.lanes.backfill_room()
    finally:
        worker._wake_pipe.close_unless_in_use(worker._threads)


def test_no_worker_method_only_forwards_the_worker_to_a_module() -> None:
    """Collaborators get what they use and are called where they are used: a method whose
    whole body is `module.function(self)` is one more name for the same thing."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(runner.Worker)))
    forwarding = []
    for method in ast.walk(tree):
        if not isinstance(method, ast.FunctionDef):
            continue
        body = [s for s in method.body if not isinstance(s, ast.Expr) or not _is_docstring(s)]
        if len(body) != 1 or not isinstance(body[0], (ast.Expr, ast.Return)):
            continue
        call = body[0].value
        if (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and isinstance(call.func.value, ast.Name)
            and call.func.value.id != "self"
            and [a.id for a in call.args if isinstance(a, ast.Name)] == ["self"]
        ):
            forwarding.append(method.name)
    assert forwarding == []


def _is_docstring(statement: ast.Expr) -> bool:
    return isinstance(statement.value, ast.Constant) and isinstance(statement.value.value, str)
