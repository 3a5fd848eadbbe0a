"""Questions before backlog on one inference session (worker/models/priority.py): a backlog
call does not start while a question's runs, waits a bounded time only, and is cut short
while questions come; one running when a question's starts is stopped and run again, a
bounded number of times, losing no row; questions and a niced backlog are not held back."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.process import wait_for
from worker import metrics
from worker.models import priority
from worker.models.embedder import Embedder


def _in_thread(work: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def _backlog_call(turns: priority.QuestionsFirst, ran: threading.Event) -> Callable[[], None]:
    """A backlog thread's work (not niced): one call, which sets `ran` once it runs."""

    def backlog() -> None:
        priority.lower(0)
        with turns.call():
            ran.set()

    return backlog


def test_a_backlog_call_waits_for_the_question_call_running() -> None:
    turns = priority.QuestionsFirst(max_yield=60)
    backlog_ran = threading.Event()
    backlog = _backlog_call(turns, backlog_ran)

    with turns.call():  # a question's call, on this thread
        thread = _in_thread(backlog)
        wait_for(lambda: turns.yielded == 1, what="the backlog call waiting")
        assert not backlog_ran.is_set()
    assert backlog_ran.wait(60)
    thread.join(60)


def test_a_backlog_call_waits_a_bounded_time_and_questions_never_wait() -> None:
    turns = priority.QuestionsFirst(max_yield=0.05)
    backlog_ran = threading.Event()
    backlog = _backlog_call(turns, backlog_ran)

    with turns.call():  # a question that outlasts the backlog's patience
        _in_thread(backlog)
        assert backlog_ran.wait(60)
        with turns.call():  # another question, with the backlog's call running: at once
            pass
    assert turns.yielded == 1


def test_a_niced_backlog_yields_to_the_kernel_not_to_the_questions() -> None:
    turns = priority.QuestionsFirst(max_yield=60)
    backlog_ran = threading.Event()
    budgets: list[int] = []

    def backlog() -> None:
        priority.lower(5)
        budgets.append(turns.token_budget(4096))
        with turns.call():
            backlog_ran.set()

    with turns.call():
        _in_thread(backlog)
        assert backlog_ran.wait(60)
    assert turns.yielded == 0
    assert budgets == [4096]


def test_a_backlog_calls_are_cut_short_only_while_questions_come() -> None:
    turns = priority.QuestionsFirst()
    budgets: dict[str, int] = {}

    def backlog(when: str) -> None:
        priority.lower(0)
        budgets[when] = turns.token_budget(4096)

    _in_thread(lambda: backlog("before any question")).join(60)
    with turns.call():
        _in_thread(lambda: backlog("during a question")).join(60)
    _in_thread(lambda: backlog("just after one")).join(60)
    assert budgets == {
        "before any question": 4096,
        "during a question": priority.YIELDING_TOKEN_BUDGET,
        "just after one": priority.YIELDING_TOKEN_BUDGET,
    }
    assert turns.token_budget(4096) == 4096  # a question's own calls are never cut


@pytest.mark.usefixtures("embed_env")
def test_a_backlog_cut_short_embeds_what_it_embeds_whole(tiny_model_dir: Path) -> None:
    model = Embedder.load(tiny_model_dir, threads=2)
    texts = [f"backlog text {i} " + "word " * (i % 50) for i in range(200)]
    whole = model.embed(texts)
    model.embed(["a question"])  # questions come: the backlog's calls are cut short
    found: dict[str, np.ndarray] = {}

    def backlog() -> None:
        priority.lower(0)
        assert model.turns.token_budget(model.token_budget) == priority.YIELDING_TOKEN_BUDGET
        found["vectors"] = model.embed(texts)

    _in_thread(backlog).join(60)
    np.testing.assert_allclose(found["vectors"], whole, atol=1e-4)


# --- a backlog call running when a question's starts: stopped, and run again ---------------------


class _Options:
    """What a backlog call's infer() gets: onnxruntime.RunOptions' `terminate`."""

    terminate = False


class _StoppableCall:
    """A backlog inference call that runs until the test lets it end, or until its
    RunOptions say terminate (as onnxruntime's run does, between two nodes)."""

    def __init__(self) -> None:
        self.started = threading.Semaphore(0)
        self.finish = threading.Event()
        self.calls = 0

    def __call__(self, options: Any) -> str:
        self.calls += 1
        self.started.release()
        while not self.finish.wait(0.005):
            if options.terminate:
                raise RuntimeError("Exiting due to terminate flag being set to true.")
        return f"result of call {self.calls}"


@pytest.fixture
def run_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(priority, "_run_options", _Options)


def _stopped(turns: priority.QuestionsFirst) -> float:
    return (
        metrics.REGISTRY.get_sample_value(
            "embed_worker_backlog_yields_total", {"model": turns.model, "how": "stopped"}
        )
        or 0.0
    )


@pytest.mark.usefixtures("run_options")
def test_a_backlog_call_running_when_a_question_starts_is_stopped_and_run_again() -> None:
    turns = priority.QuestionsFirst(max_yield=60, model="stop-test")
    call = _StoppableCall()
    found: dict[str, Any] = {}
    stopped_before = _stopped(turns)

    def backlog() -> None:
        priority.lower(0)
        found["result"] = turns.run(call)

    thread = _in_thread(backlog)
    assert call.started.acquire(timeout=60)
    question_ran = []
    with turns.call():  # a question's call begins: the backlog's stops, and waits
        question_ran.append(True)
        wait_for(lambda: turns.stopped == 1, what="the backlog call stopped")
        assert call.calls == 1  # not run again while the question's runs
    assert call.started.acquire(timeout=60)  # run again once it ended
    call.finish.set()
    thread.join(60)
    assert found["result"] == "result of call 2"  # the second run's: one answer, not two
    assert _stopped(turns) == stopped_before + 1


@pytest.mark.usefixtures("run_options")
def test_a_backlog_call_is_stopped_at_most_max_stops_times() -> None:
    """A steady stream of questions slows the backlog without stopping it: after max_stops
    its call runs to its end beside the questions'."""
    turns = priority.QuestionsFirst(max_yield=60, model="stop-test", max_stops=2)
    call = _StoppableCall()
    found: dict[str, Any] = {}

    def backlog() -> None:
        priority.lower(0)
        found["result"] = turns.run(call)

    thread = _in_thread(backlog)
    for stops in (1, 2):
        assert call.started.acquire(timeout=60)
        with turns.call():
            wait_for(lambda: turns.stopped == stops, what=f"stop {stops}")  # noqa: B023
    assert call.started.acquire(timeout=60)
    with turns.call():  # the third run is not stopped
        assert not call.finish.wait(0.1)
        assert turns.stopped == 2
        call.finish.set()
        thread.join(60)
    assert found["result"] == "result of call 3"


@pytest.mark.usefixtures("run_options")
@pytest.mark.parametrize(("seconds_per_token", "stopped"), [(1e-9, False), (1e6, True)])
def test_a_backlog_call_is_stopped_only_early_in_its_run(
    seconds_per_token: float, stopped: bool
) -> None:
    """Stopping loses what the call computed: past STOP_WITHIN of the time its tokens should
    take (at the pace of the calls before it), the question shares the cores with the rest."""
    turns = priority.QuestionsFirst(max_yield=60, model="stop-test")
    turns.seconds_per_token = seconds_per_token  # 1 ns or 11 days for its one token
    call = _StoppableCall()

    def backlog() -> None:
        priority.lower(0)
        turns.run(call, tokens=1)

    thread = _in_thread(backlog)
    assert call.started.acquire(timeout=60)
    with turns.call():
        if stopped:
            wait_for(lambda: turns.stopped == 1, what="the backlog call stopped")
        else:
            assert not call.finish.wait(0.05) and turns.stopped == 0
            call.finish.set()  # it ends beside the question's call
            thread.join(60)
    call.finish.set()
    thread.join(60)
    assert (turns.stopped, call.calls) == ((1, 2) if stopped else (0, 1))


@pytest.mark.usefixtures("run_options")
def test_a_backlog_call_that_fails_by_itself_is_not_run_again() -> None:
    turns = priority.QuestionsFirst(max_yield=60)
    calls = []

    def failing(options: Any) -> None:
        calls.append(options)
        raise RuntimeError("the model's own failure")

    def backlog() -> None:
        priority.lower(0)
        with pytest.raises(RuntimeError, match="own failure"):
            turns.run(failing)

    _in_thread(backlog).join(60)
    assert len(calls) == 1 and turns.stopped == 0


@pytest.mark.usefixtures("embed_env")
def test_backlog_batches_stopped_for_questions_lose_no_row(minilm: Embedder) -> None:
    """The real session: a backlog embedding while questions come has calls stopped
    (RunOptions.terminate) and run again; every one of its rows gets the vector it gets with
    no question about, once."""
    texts = [f"backlog text {i} " + "word " * (i % 60) for i in range(300)]
    whole = minilm.embed(texts)
    stopped_before = minilm.turns.stopped
    done = threading.Event()
    found: list[np.ndarray] = []

    def backlog() -> None:
        priority.lower(0)
        while not done.is_set():
            found.append(minilm.embed(texts))

    thread = _in_thread(backlog)
    wait_for(
        lambda: minilm.embed(["a question"]) is not None and minilm.turns.stopped > stopped_before,
        interval=0.01,
        what="a backlog call stopped by a question's",
    )
    done.set()
    thread.join(120)
    assert found
    for vectors in found:
        assert vectors.shape == whole.shape
        np.testing.assert_allclose(vectors, whole, atol=1e-4)
