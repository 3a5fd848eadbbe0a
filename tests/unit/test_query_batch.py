"""Questions embedded together (worker/models/query_batch.py): each gets its own vector, as
alone; a failing question fails alone; a batch closes when full and a lone question never
waits; a second batch starts beside a running one once two questions wait, and no more than
max_batches run at once. And questions before backlog (worker/models/priority.py): a niced
thread embeds on inference threads of its own priority, with the same vectors."""

from __future__ import annotations

import os
import threading
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.process import wait_for
from worker.models import priority
from worker.models.embedder import Embedder, FloatMatrix
from worker.models.query_batch import QueryBatcher

pytestmark = pytest.mark.usefixtures("embed_env")

QUESTIONS = [
    "how do I reset my password",
    "refunds",
    "what is the difference between a chunked table and a side table, and when is each used?",
    "Ünïcödé question?",
    "pgvector halfvec dimensions",
    "why does the worker stop answering when the database restarts during a long backfill",
]


class Gated:
    """A model whose first call waits until `release` is set, so that the questions asked
    meanwhile gather behind it; every call's texts are kept. Vectors from `inner`, or a digest
    of each text; a text holding "poison" fails the whole call, as a text the model cannot
    take would."""

    name = "gated"
    max_tokens = 512

    def __init__(self, inner: Embedder | None = None) -> None:
        self.inner = inner
        self.dim = inner.dim if inner is not None else 4
        self.calls: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def embed(self, texts: Sequence[str]) -> FloatMatrix:
        self.calls.append(list(texts))
        if len(self.calls) == 1:
            self.entered.set()
            assert self.release.wait(30)
        if any("poison" in t for t in texts):
            raise ValueError("poisoned")
        if self.inner is not None:
            return self.inner.embed(texts)
        return digests(texts)

    def embed_with_stats(self, texts: Sequence[str]) -> Any:
        raise NotImplementedError


def digests(texts: Sequence[str]) -> FloatMatrix:
    return np.array([[zlib.crc32(t.encode()) % 97, len(t), 1, 2] for t in texts], np.float32)


def ask_all(
    batcher: QueryBatcher, questions: list[str]
) -> tuple[dict[str, FloatMatrix], dict[str, BaseException], Callable[[], None]]:
    """Each question asked from a thread of its own; the answers and errors by question, and
    a join()."""
    answers: dict[str, FloatMatrix] = {}
    errors: dict[str, BaseException] = {}

    def ask(text: str) -> None:
        try:
            answers[text] = batcher.embed([text])[0]
        except BaseException as exc:
            errors[text] = exc

    threads = [threading.Thread(target=ask, args=(q,)) for q in questions]
    for thread in threads:
        thread.start()

    def join() -> None:
        for thread in threads:
            thread.join(30)
            assert not thread.is_alive()

    return answers, errors, join


def ask_together(batcher: QueryBatcher, texts: list[str]) -> Callable[[], None]:
    """One question of several texts, asked from a thread of its own; a join()."""
    thread = threading.Thread(target=batcher.embed, args=(texts,))
    thread.start()

    def join() -> None:
        thread.join(30)
        assert not thread.is_alive()

    return join


def gather_behind_a_first_question(
    model: Gated, batcher: QueryBatcher, questions: list[str]
) -> tuple[dict[str, FloatMatrix], dict[str, BaseException]]:
    """A first question holds the model; `questions` are asked meanwhile, then it lets go (a
    batcher of one batch at a time: they all gather behind it)."""
    assert batcher.max_batches == 1
    _, _, join_first = ask_all(batcher, ["a first question"])
    assert model.entered.wait(30)
    answers, errors, join = ask_all(batcher, questions)
    wait_for(lambda: batcher.waiting() == len(questions), timeout=30)
    model.release.set()
    join_first()
    join()
    return answers, errors


def test_questions_embedded_together_get_the_vectors_they_get_alone(minilm: Embedder) -> None:
    model = Gated(minilm)
    batcher = QueryBatcher(model, max_batch=32, max_wait=0.0, max_batches=1)

    answers, errors = gather_behind_a_first_question(model, batcher, QUESTIONS)

    assert errors == {}
    assert len(model.calls) == 2 and sorted(model.calls[1]) == sorted(QUESTIONS)  # one call
    for question in QUESTIONS:
        np.testing.assert_allclose(answers[question], minilm.embed([question])[0], atol=1e-4)


def test_a_question_that_fails_the_model_fails_alone() -> None:
    model = Gated()
    batcher = QueryBatcher(model, max_batch=32, max_wait=0.0, max_batches=1)
    asked = ["a fine question", "a poison question", "another fine one"]

    answers, errors = gather_behind_a_first_question(model, batcher, asked)

    assert set(errors) == {"a poison question"}
    assert isinstance(errors["a poison question"], ValueError)
    assert set(answers) == {"a fine question", "another fine one"}
    for question in answers:
        np.testing.assert_array_equal(answers[question], digests([question])[0])
    # The batch failed once, then each question went alone.
    assert sorted(model.calls[1]) == sorted(asked)
    assert sorted(map(tuple, model.calls[2:])) == sorted((q,) for q in asked)


def test_a_full_batch_is_embedded_without_waiting_out_the_wait() -> None:
    """An hour's wait: the test ends only because a batch closes when it holds max_batch
    texts."""
    model = Gated()
    batcher = QueryBatcher(model, max_batch=3, max_wait=3600.0, max_batches=1)

    answers, errors = gather_behind_a_first_question(model, batcher, ["q1", "q2", "q3"])

    assert errors == {} and set(answers) == {"q1", "q2", "q3"}
    assert [len(call) for call in model.calls[1:]] == [3]


def test_a_question_alone_does_not_wait_for_company() -> None:
    """An hour's wait: the test ends only because a question with no other about (the last
    batch held one) is embedded at once, then the next one too."""
    model = Gated()
    model.release.set()
    batcher = QueryBatcher(model, max_batch=32, max_wait=3600.0)

    for text in ("alone", "alone again"):
        answers, errors, join = ask_all(batcher, [text])
        join()
        assert errors == {} and set(answers) == {text}


def test_the_biggest_question_goes_alone_and_empty_ones_cost_nothing() -> None:
    model = Gated()
    model.release.set()
    batcher = QueryBatcher(model, max_batch=2, max_wait=0.0)

    assert batcher.embed(["a", "b", "c"]).shape == (3, 4)
    assert batcher.embed([]).shape == (0, 4)
    assert model.calls == [["a", "b", "c"]]


class Held:
    """A model whose every call waits until the test lets that call go (`go`, in the order
    the calls came); the texts of each call, and the most calls that ran at once."""

    name = "held"
    dim = 4
    max_tokens = 512

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.gates: list[threading.Event] = []
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> FloatMatrix:
        gate = threading.Event()
        with self._lock:
            self.calls.append(list(texts))
            self.gates.append(gate)
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            assert gate.wait(30)
            return digests(texts)
        finally:
            with self._lock:
                self.running -= 1

    def go(self, call: int) -> None:
        wait_for(lambda: len(self.gates) > call, timeout=30)
        self.gates[call].set()

    def embed_with_stats(self, texts: Sequence[str]) -> Any:
        raise NotImplementedError


def test_two_waiting_questions_start_a_batch_beside_the_one_being_embedded() -> None:
    """One question waiting while a batch of several texts is embedded waits for it; a second
    one waiting starts a batch of both at once, without waiting for the first to end."""
    model = Held()
    batcher = QueryBatcher(model, max_batch=32, max_wait=0.0)
    join_first = ask_together(batcher, ["first", "second"])
    wait_for(lambda: len(model.calls) == 1, timeout=30)
    answers, errors, join_one = ask_all(batcher, ["q1"])
    wait_for(lambda: batcher.waiting() == 1, timeout=30)
    more, more_errors, join_two = ask_all(batcher, ["q2"])

    wait_for(lambda: len(model.calls) == 2, timeout=30)  # the first still embedding
    assert model.calls == [["first", "second"], ["q1", "q2"]] and model.running == 2
    model.go(1)
    join_one()
    join_two()
    model.go(0)
    join_first()
    assert errors == more_errors == {}
    np.testing.assert_array_equal(answers["q1"], digests(["q1"])[0])
    np.testing.assert_array_equal(more["q2"], digests(["q2"])[0])


def test_no_more_batches_at_once_than_max_batches() -> None:
    """Two batches being embedded: the questions asked meanwhile wait for one of them to end,
    then go together."""
    model = Held()
    batcher = QueryBatcher(model, max_batch=32, max_wait=0.0, max_batches=2)
    join_first = ask_together(batcher, ["first", "second"])
    wait_for(lambda: len(model.calls) == 1, timeout=30)
    _, _, join_second = ask_all(batcher, ["s1", "s2"])
    wait_for(lambda: len(model.calls) == 2, timeout=30)

    answers, errors, join = ask_all(batcher, ["t1", "t2", "t3"])
    wait_for(lambda: batcher.waiting() == 3, timeout=30)
    model.go(1)
    model.go(2)
    join_second()
    join()
    model.go(0)
    join_first()
    assert errors == {} and set(answers) == {"t1", "t2", "t3"}
    assert sorted(model.calls[2]) == ["t1", "t2", "t3"]
    assert model.most_at_once == 2


def test_a_question_asked_beside_a_lone_question_starts_at_once() -> None:
    """A lone question (one text) being embedded: the next question does not wait for it or
    for company, it starts beside it; a third waits (two batches at most)."""
    model = Held()
    batcher = QueryBatcher(model, max_batch=32, max_wait=0.0, max_batches=2)
    _, _, join_first = ask_all(batcher, ["first"])
    wait_for(lambda: len(model.calls) == 1, timeout=30)
    answers, errors, join_next = ask_all(batcher, ["next"])
    wait_for(lambda: len(model.calls) == 2, timeout=30)  # the first still embedding
    assert model.calls == [["first"], ["next"]] and model.running == 2

    last, last_errors, join_last = ask_all(batcher, ["third"])
    wait_for(lambda: batcher.waiting() == 1, timeout=30)
    model.go(1)
    join_next()
    model.go(2)  # the third, once a place was free
    join_last()
    model.go(0)
    join_first()
    assert errors == last_errors == {}
    assert model.calls[2] == ["third"] and model.most_at_once == 2
    np.testing.assert_array_equal(answers["next"], digests(["next"])[0])
    np.testing.assert_array_equal(last["third"], digests(["third"])[0])


# --- questions before backlog ---------------------------------------------------------------


def _nice_of_tasks() -> dict[int, int]:
    """This process's threads (tasks) and their nice values, from /proc."""
    found = {}
    for task in os.listdir("/proc/self/task"):
        try:
            stat = Path(f"/proc/self/task/{task}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):  # a thread of another test's, ended
            continue  # since the listing (before its stat was opened, or while it was read)
        fields = stat[stat.rindex(")") + 2 :].split()
        found[int(task)] = int(fields[16])  # nice: field 19 of stat, 17th after the name
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="Linux's per-thread nice")
def test_a_backlog_thread_embeds_on_inference_threads_of_its_own_priority(
    tiny_model_dir: Path,
) -> None:
    model = Embedder.load(tiny_model_dir, threads=2)
    texts = ["a question", "and a longer text of the backlog, embedded alike"]
    expected = model.embed(texts)
    before = _nice_of_tasks()
    found: dict[str, Any] = {}

    def backlog() -> None:
        priority.lower(7)
        found["vectors"] = model.embed(texts)
        found["task"] = threading.get_native_id()

    thread = threading.Thread(target=backlog)
    thread.start()
    thread.join(60)

    np.testing.assert_allclose(found["vectors"], expected, atol=1e-6)
    new = {task: nice for task, nice in _nice_of_tasks().items() if task not in before}
    # The session made for it has an intra-op thread (threads=2: the caller and one more),
    # at the backlog's nice; the questions' threads (this one) are as they were.
    assert 7 in new.values()
    assert _nice_of_tasks()[threading.get_native_id()] == before[threading.get_native_id()]
    assert priority.current() == 0
