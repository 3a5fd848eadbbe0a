"""Questions embedded together: concurrent calls for one model share its inference calls
(dynamic batching, as text-embeddings-inference and Triton do), so that eight questions cost
about what two cost alone.

Whoever asks while no batch is being embedded leads: it takes the questions waiting (its own
among them, oldest first, up to `max_batch` texts), embeds them in one call, hands each caller
its rows, and stops leading once its own question is in a batch; the next waiting caller leads
then. There is no thread of our own: a lone question is embedded on its caller's thread at
once. A leader waits for more questions only while others are about (the last batch held
several, or some already wait), and only until the oldest waiting question has waited
`max_wait`: the wait buys a fuller batch, never delays a question beyond `max_wait`, and
never delays a question that is alone.

While a batch is being embedded, a second one starts beside it as soon as SECOND_BATCH_WAITING
questions wait (`max_batches` at once, 2 by default), on the same inference session: at 8
clients one batch at a time kept the model embedding 95% of the time and its two intra-op
threads got about one core between them (a parallel section waits for whichever thread a
database backend preempted), leaving 0.2 of the cores idle; two at once keep them busy, and
waiting for two questions keeps the batches full enough to keep batching's savings
(bench/results/history/search.md, 2026-11-28). Beside a lone question (one text) the next
question starts at once: one text on both intra-op threads uses them least, and two such calls
side by side answered 1.12x as many searches at 2 clients, the same at 4 and 8.

Only what is fully asked reaches a batch: POST /search's body is read whole before its search
starts (worker/http/front.py), so a slow client holds no batch. A question whose text makes
the model fail fails alone: a batch that raised is embedded again one question at a time.
Embedding does not depend on a text's neighbours beyond rounding (the embedder pads each
inference call to its longest input, masked: tests hold the vectors within 1e-4 of one at a
time).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from worker import metrics
from worker.models.embedder import FloatMatrix, TextModel

DEFAULT_MAX_BATCH = 32  # texts per batched call: EMBED_QUERY_BATCH_SIZE
DEFAULT_MAX_WAIT = 0.001  # seconds a leader waits for more: EMBED_QUERY_BATCH_WAIT_MS
DEFAULT_MAX_BATCHES = 2  # batches of one model embedded at once, at most
SECOND_BATCH_WAITING = 2  # questions waiting that start a batch beside one being embedded


@dataclass(eq=False)
class _Question:
    texts: list[str]
    asked: float = field(default_factory=time.monotonic)
    vectors: FloatMatrix | None = None
    error: BaseException | None = None
    taken: bool = field(default=False)  # into a batch: no longer waiting
    done: bool = field(default=False)

    def answered(self) -> bool:
        return self.done

    def in_batch(self) -> bool:
        return self.taken

    def answer(self) -> FloatMatrix:
        if self.error is not None:
            raise self.error
        assert self.vectors is not None
        return self.vectors


class QueryBatcher:
    """One model's questions, batched. Safe to share between threads."""

    def __init__(
        self,
        model: TextModel,
        *,
        max_batch: int,
        max_wait: float,
        max_batches: int = DEFAULT_MAX_BATCHES,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        if max_wait < 0:
            raise ValueError(f"max_wait must not be negative, not {max_wait}")
        if max_batches < 1:
            raise ValueError(f"max_batches must be at least 1, not {max_batches}")
        self.model = model
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.max_batches = max_batches
        lock = threading.Lock()
        self._arrived = threading.Condition(lock)  # leaders gathering wait on it
        self._answered = threading.Condition(lock)  # callers whose question waits, on this
        self._waiting: deque[_Question] = deque()
        self._leaders = 0  # batches being gathered or embedded now
        self._crowded = False  # the last batch held several questions: others are about
        self._lone = 0  # batches being embedded that hold one text (a lone question)

    def embed(self, texts: Sequence[str]) -> FloatMatrix:
        """Vectors for `texts`, shape (len(texts), dim), as model.embed(texts) gives them;
        raises what embedding these texts alone raised."""
        question = _Question(list(texts))
        if not question.texts:
            return np.zeros((0, self.model.dim), dtype=np.float32)
        with self._arrived:
            self._waiting.append(question)
            self._arrived.notify_all()
            while not question.answered() and not self._may_lead(question):
                self._answered.wait()
            if question.answered():
                return question.answer()
            self._leaders += 1
        try:
            while batch := self._gather(question):
                self._embed_batch(batch, lone=_one_text(batch))
        finally:
            with self._arrived:
                self._leaders -= 1
                if not question.in_batch():  # interrupted: nobody is left to ask for it
                    self._waiting.remove(question)
                self._answered.notify_all()  # the next waiting caller may lead
        with self._arrived:
            while not question.answered():  # in another leader's batch
                self._answered.wait()
        return question.answer()

    def _may_lead(self, question: _Question) -> bool:
        """(Holding the lock.) Whether the caller of `question`, still waiting, leads a batch
        now: when none is being embedded, or beside those that are once enough wait."""
        if question.in_batch():
            return False
        if self._leaders == 0:
            return True
        if self._leaders >= self.max_batches:
            return False
        # Beside a lone question a question need not wait for company (see the docstring).
        return len(self._waiting) >= SECOND_BATCH_WAITING or self._lone > 0

    def waiting(self) -> int:
        """Questions waiting for a batch now."""
        with self._arrived:
            return len(self._waiting)

    def _gather(self, question: _Question) -> list[_Question]:
        """The next batch of a leader whose own `question` is not in one yet, oldest first:
        while other questions are about, once it is full or its oldest question has waited
        max_wait. Empty once `question` is in a batch (this leader's or another's)."""
        with self._arrived:
            if question.in_batch():
                return []
            if self._crowded or len(self._waiting) > 1:
                deadline = self._waiting[0].asked + self.max_wait
                while not question.in_batch() and self._texts_waiting() < self.max_batch:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._arrived.wait(left)
                if question.in_batch():  # another leader took it while this one waited
                    return []
            batch = [self._waiting.popleft()]
            size = len(batch[0].texts)
            while self._waiting and size + len(self._waiting[0].texts) <= self.max_batch:
                size += len(self._waiting[0].texts)
                batch.append(self._waiting.popleft())
            for taken in batch:
                taken.taken = True
            self._crowded = len(batch) > 1
            self._lone += _one_text(batch)
        return batch

    def _texts_waiting(self) -> int:
        return sum(len(q.texts) for q in self._waiting)

    def _embed_batch(self, batch: list[_Question], *, lone: bool = False) -> None:
        """Each question of `batch` answered (vectors or its own error), and its caller told;
        `lone`: the batch was counted as one of a single text, and is no more once answered."""
        try:
            try:
                vectors = self.model.embed([text for q in batch for text in q.texts])
            except Exception as exc:
                if len(batch) == 1:
                    batch[0].error = exc
                else:  # which question failed it: each alone
                    for question in batch:
                        self._embed_batch([question])
                    return
            else:
                start = 0
                for question in batch:
                    question.vectors = vectors[start : start + len(question.texts)]
                    start += len(question.texts)
                metrics.QUERY_BATCH_QUESTIONS.labels(self.model.name).observe(len(batch))
        except BaseException as exc:  # interrupted: no caller may wait for ever
            for question in batch:
                if not question.done and question.vectors is None and question.error is None:
                    question.error = exc
            raise
        finally:
            with self._arrived:
                for question in batch:
                    question.done = True
                self._lone -= lone
                self._answered.notify_all()


def _one_text(batch: list[_Question]) -> bool:
    return len(batch) == 1 and len(batch[0].texts) == 1


class QueryBatchers:
    """A QueryBatcher per model, made on its first question; a model reloaded (a remote
    model's registration changed) gets a new one."""

    def __init__(
        self,
        load: Callable[[str], TextModel],
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_wait: float = DEFAULT_MAX_WAIT,
    ) -> None:
        self.load = load
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._batchers: dict[str, QueryBatcher] = {}
        self._lock = threading.Lock()

    def model(self, name: str) -> TextModel:
        """The model, loaded (ModelError when it cannot be)."""
        return self.load(name)

    def embed(self, name: str, texts: Sequence[str]) -> FloatMatrix:
        """`texts` embedded by model `name`, batched with other callers' questions."""
        return self.batcher(name).embed(texts)

    def batcher(self, name: str) -> QueryBatcher:
        model = self.load(name)
        with self._lock:
            found = self._batchers.get(name)
            if found is None or found.model is not model:
                found = QueryBatcher(model, max_batch=self.max_batch, max_wait=self.max_wait)
                self._batchers[name] = found
            return found
