"""Questions before backlog on one inference session (worker/models/priority.py): a backlog
call does not start while a question's runs, waits a bounded time only, and is cut short
while questions come, losing no row; questions and a niced backlog are not held back."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.support.process import wait_for
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


@pytest.mark.usefixtures("embed_env")
def test_backlog_batches_beside_questions_get_the_vectors_they_get_alone(
    minilm: Embedder,
) -> None:
    """The real session: a backlog embedding while questions come waits for their calls and
    runs beside them; every one of its rows gets the vector it gets with no question about."""
    texts = [f"backlog text {i} " + "word " * (i % 60) for i in range(300)]
    whole = minilm.embed(texts)
    yielded_before = minilm.turns.yielded
    done = threading.Event()
    found: list[np.ndarray] = []

    def backlog() -> None:
        priority.lower(0)
        while not done.is_set():
            found.append(minilm.embed(texts))

    thread = _in_thread(backlog)
    wait_for(
        lambda: minilm.embed(["a question"]) is not None and minilm.turns.yielded > yielded_before,
        interval=0.01,
        what="a backlog call waiting for a question's",
    )
    done.set()
    thread.join(120)
    assert found
    for vectors in found:
        assert vectors.shape == whole.shape
        np.testing.assert_allclose(vectors, whole, atol=1e-4)
