"""Questions embedded together: concurrent calls for one model share its inference calls
(dynamic batching, as text-embeddings-inference and Triton do), so that eight questions cost
about what two cost alone.

Whoever asks while no batch is being embedded leads: it takes the questions waiting (its own
among them, oldest first, up to `max_batch` texts), embeds them in one call, hands each caller
its rows, and stops leading once its own question is answered; the next waiting caller leads
then. There is no thread of our own: a lone question is embedded on its caller's thread at
once. A leader waits for more questions only while others are about (the last batch held
several, or some already wait), and only until the oldest waiting question has waited
`max_wait`: the wait buys a fuller batch, never delays a question beyond `max_wait`, and
never delays a question that is alone.

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
DEFAULT_MAX_WAIT = 0.002  # seconds a leader waits for more: EMBED_QUERY_BATCH_WAIT_MS


@dataclass(eq=False)
class _Question:
    texts: list[str]
    asked: float = field(default_factory=time.monotonic)
    vectors: FloatMatrix | None = None
    error: BaseException | None = None
    done: bool = field(default=False)

    def answered(self) -> bool:
        return self.done

    def answer(self) -> FloatMatrix:
        if self.error is not None:
            raise self.error
        assert self.vectors is not None
        return self.vectors


class QueryBatcher:
    """One model's questions, batched. Safe to share between threads."""

    def __init__(self, model: TextModel, *, max_batch: int, max_wait: float) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        if max_wait < 0:
            raise ValueError(f"max_wait must not be negative, not {max_wait}")
        self.model = model
        self.max_batch = max_batch
        self.max_wait = max_wait
        lock = threading.Lock()
        self._arrived = threading.Condition(lock)  # a leader gathering waits on it
        self._answered = threading.Condition(lock)  # callers whose question waits, on this
        self._waiting: deque[_Question] = deque()
        self._leading = False
        self._crowded = False  # the last batch held several questions: others are about

    def embed(self, texts: Sequence[str]) -> FloatMatrix:
        """Vectors for `texts`, shape (len(texts), dim), as model.embed(texts) gives them;
        raises what embedding these texts alone raised."""
        question = _Question(list(texts))
        if not question.texts:
            return np.zeros((0, self.model.dim), dtype=np.float32)
        with self._arrived:
            self._waiting.append(question)
            self._arrived.notify()
            while self._leading and not question.answered():
                self._answered.wait()
            if question.answered():
                return question.answer()
            self._leading = True
        try:
            while not question.answered():
                self._embed_batch(self._gather())
        finally:
            with self._arrived:
                self._leading = False
                self._answered.notify_all()  # the next waiting caller leads
        return question.answer()

    def waiting(self) -> int:
        """Questions waiting for a batch now."""
        with self._arrived:
            return len(self._waiting)

    def _gather(self) -> list[_Question]:
        """The next batch, oldest first: while other questions are about, once it is full or
        its oldest question has waited max_wait."""
        with self._arrived:
            if self._crowded or len(self._waiting) > 1:
                deadline = self._waiting[0].asked + self.max_wait
                while self._texts_waiting() < self.max_batch:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._arrived.wait(left)
            batch = [self._waiting.popleft()]
            size = len(batch[0].texts)
            while self._waiting and size + len(self._waiting[0].texts) <= self.max_batch:
                size += len(self._waiting[0].texts)
                batch.append(self._waiting.popleft())
            self._crowded = len(batch) > 1
        return batch

    def _texts_waiting(self) -> int:
        return sum(len(q.texts) for q in self._waiting)

    def _embed_batch(self, batch: list[_Question]) -> None:
        """Each question of `batch` answered (vectors or its own error), and its caller told."""
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
                self._answered.notify_all()


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
