"""Questions before backlog: a thread that embeds backlog work (the pipeline's embed stage)
says so once (`lower`), and a question's inference call then goes before the backlog's.

By default the backlog and questions share one inference session per model, and the backlog
makes way for questions (QuestionsFirst, held by each embedder): a backlog call does not start
while a question's call runs (it waits at most MAX_YIELD_SECONDS, so a steady stream of
questions slows the backlog without stopping it), and while questions come its calls are cut
to YIELDING_TOKEN_BUDGET tokens, so that a question arriving during one shares the cores with
a short call only (all-MiniLM-L6-v2 on 2 cores: about 13 ms). A question's call starts at
once. No call is stopped midway: stopping one loses what it computed, and in the search bench
(bench/search.py) stopping the calls a question met kept 0.42-0.86 of the backlog's rate
against 0.58-1.01 without, for a p95 no better at chat-like arrivals (docs/performance.md).

With a nice value (EMBED_BACKLOG_NICE, opt-in) the backlog thread also runs at a lower CPU
priority for the rest of its life, and so do the inference threads of a session of its own:
onnxruntime gives each session a pool of intra-op threads, made when the session is made and
inheriting the priority of the thread that made it, so the embedder keeps a session per
priority (worker/models/embedder.py), and the kernel gives a question's threads the cores
as soon as they want them, even in the middle of a backlog call. The price is a second
session of each model the backlog and questions share (its weights and arena: about 167 MB
for all-MiniLM-L6-v2). A thread cannot raise its priority again without privileges, so only
threads that never answer a question are niced.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from worker import metrics

logger = logging.getLogger(__name__)

MAX_YIELD_SECONDS = 0.5  # the longest a backlog call waits for questions' calls to end
# While questions come (one within RECENT_SECONDS), a backlog's inference calls are cut to this
# many tokens, so that it yields often and a question shares the cores with a short call only.
# The embedder's speed is flat from 1024 to 32768 tokens a call (worker/models/batching.py);
# at 256 it loses a little, only while questions come.
YIELDING_TOKEN_BUDGET = 256
RECENT_SECONDS = 2.0

_lane = threading.local()


def lower(nice: int) -> None:
    """This thread embeds backlog work from now on: its inference calls yield to questions',
    and with `nice` (1 to 19; 0: none) it runs at that lower priority on a session of its
    own. Where threads cannot be niced (not Linux, a refused setpriority) it keeps its
    priority and says so in the log."""
    _lane.backlog = True
    if nice <= 0:
        return
    if not sys.platform.startswith("linux"):
        logger.info("backlog threads keep their priority: %s has no per-thread nice", sys.platform)
        return
    task = threading.get_native_id()  # on Linux a thread is a task: its id sets its nice
    try:
        if os.getpriority(os.PRIO_PROCESS, task) < nice:  # a process started niced stays so
            os.setpriority(os.PRIO_PROCESS, task, nice)
    except OSError as exc:
        logger.warning("backlog threads keep their priority: setpriority refused: %s", exc)
        return
    _lane.nice = nice


def current() -> int:
    """The nice value this thread was lowered to (0: a thread of normal priority)."""
    nice: int = getattr(_lane, "nice", 0)
    return nice


def is_backlog() -> bool:
    """Whether this thread embeds backlog work (`lower` was called on it)."""
    backlog: bool = getattr(_lane, "backlog", False)
    return backlog


class QuestionsFirst:
    """One model's inference calls in turn: a backlog thread's call on the questions' session
    starts once no question's call runs (or after MAX_YIELD_SECONDS); a question's call starts
    at once. Safe to share between threads."""

    def __init__(self, max_yield: float = MAX_YIELD_SECONDS, *, model: str = "") -> None:
        self.max_yield = max_yield
        self.model = model
        self._ended = threading.Condition()
        self._questions = 0  # questions' inference calls running now
        self._last_question = float("-inf")  # time.monotonic() when the last one ended
        self.yielded = 0  # backlog calls that waited for a question's (for tests and benches)

    @contextmanager
    def call(self) -> Iterator[None]:
        """Around one inference call of this thread's."""
        if not is_backlog():
            with self._question():
                yield
            return
        if current() == 0:  # a niced backlog has a session of its own and yields to the kernel
            with self._ended:
                self._wait_for_questions()
        yield

    @contextmanager
    def _question(self) -> Iterator[None]:
        with self._ended:
            self._questions += 1
        try:
            yield
        finally:
            with self._ended:
                self._questions -= 1
                self._last_question = time.monotonic()
                if self._questions == 0:
                    self._ended.notify_all()

    def _wait_for_questions(self) -> None:
        """(Holding the lock.) Until no question's call runs, at most max_yield."""
        if self._questions:
            self.yielded += 1
            metrics.BACKLOG_YIELDS.labels(self.model).inc()
            self._ended.wait_for(lambda: self._questions == 0, timeout=self.max_yield)

    def token_budget(self, budget: int) -> int:
        """The tokens this thread's next inference calls may hold: `budget`, or for a backlog
        on the questions' session while questions come, at most YIELDING_TOKEN_BUDGET."""
        if not is_backlog() or current() != 0:
            return budget
        with self._ended:
            asked = self._questions or time.monotonic() - self._last_question < RECENT_SECONDS
        return min(budget, YIELDING_TOKEN_BUDGET) if asked else budget
