"""Questions before backlog: a thread that embeds backlog work (the pipeline's embed stage)
says so once (`lower`), and a question's inference call then goes before the backlog's, in
one of two ways.

By default the backlog and questions share one inference session per model, and the backlog
makes way for questions (QuestionsFirst, held by each embedder): a backlog call does not start
while a question's call runs, and one running when a question's starts is stopped (onnxruntime's
RunOptions.terminate, seen between two of the graph's nodes, a millisecond or so) and run
again once the question's call ended, at most MAX_STOPS times (then it runs to its end beside
the questions, as it would without turns). A question so never waits for a backlog call nor
shares the cores with one, and no memory is added; what a stop costs the backlog is the part
of a call it computed (while questions come, calls are cut to YIELDING_TOKEN_BUDGET tokens,
so little). The stopped call is run again with the same inputs inside the same embed():
its rows are neither lost nor embedded twice, and its jobs stay leased meanwhile. The backlog
waits at most MAX_YIELD_SECONDS a call, so a steady stream of questions slows it without
stopping it.

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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from worker import metrics

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_YIELD_SECONDS = 0.5  # the longest a backlog call waits for questions' calls to end
MAX_STOPS = 3  # times one backlog call is stopped for questions before it runs to its end
STOP_WITHIN = 0.5  # a backlog call is stopped for a question only in this share of its time
# While questions come (one within RECENT_SECONDS), a backlog's inference calls are cut to this
# many tokens, so that it yields often and a question shares the cores with a short call only.
# The embedder's speed is flat from 1024 to 32768 tokens a call (worker/models/batching.py).
YIELDING_TOKEN_BUDGET = 1024
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


class _BacklogRun:
    """A backlog inference call running with `options` (onnxruntime.RunOptions), which a
    question's call may stop; `expected`: the seconds it should take (None: not known yet)."""

    def __init__(self, options: Any, expected: float | None) -> None:
        self.options = options
        self.expected = expected
        self.started = time.monotonic()
        self.stopped = False

    def worth_stopping(self, now: float) -> bool:
        """Whether to stop it for a question's call starting `now`: while it is in the first
        STOP_WITHIN of its expected time (stopping loses what it computed; past that, the
        question shares the cores with what is left of it, at most its own time again)."""
        return self.expected is None or now - self.started < STOP_WITHIN * self.expected

    def stop(self) -> None:
        self.stopped = True
        self.options.terminate = True


class QuestionsFirst:
    """One model's inference calls in turn: a backlog thread's call on the questions' session
    starts once no question's call runs (or after MAX_YIELD_SECONDS), and is stopped, to be run
    again, when a question's starts; a question's call starts at once. Safe to share between
    threads."""

    def __init__(
        self, max_yield: float = MAX_YIELD_SECONDS, *, model: str = "", max_stops: int = MAX_STOPS
    ) -> None:
        self.max_yield = max_yield
        self.max_stops = max_stops
        self.model = model
        self._ended = threading.Condition()
        self._questions = 0  # questions' inference calls running now
        self._last_question = float("-inf")  # time.monotonic() when the last one ended
        self._running: set[_BacklogRun] = set()  # backlog calls a question's may stop
        # Seconds a backlog call took per token fed (a moving average): how long the next
        # should take, None until one ran to its end.
        self.seconds_per_token: float | None = None
        self.yielded = 0  # backlog calls that waited for a question's (for tests and benches)
        self.stopped = 0  # backlog calls stopped for a question's, and run again

    @contextmanager
    def call(self) -> Iterator[None]:
        """Around one inference call of this thread's (a backlog's cannot be stopped: run())."""
        if not is_backlog():
            with self._question():
                yield
            return
        if current() == 0:  # a niced backlog has a session of its own and yields to the kernel
            with self._ended:
                self._wait_for_questions()
        yield

    def run(self, infer: Callable[[Any], T], *, tokens: int = 0) -> T:
        """One inference call of `tokens` tokens (padding included), `infer(run_options)`: a
        question's at once (run_options None); a backlog's on the questions' session once no
        question's runs, with RunOptions a question's call stops it by (early in it:
        _BacklogRun.worth_stopping), and again, with the same inputs, once stopped."""
        if not is_backlog() or current() != 0:
            with self.call():
                return infer(None)
        stops = 0
        while True:
            with self._ended:
                self._wait_for_questions()
                pace = self.seconds_per_token
                run = _BacklogRun(_run_options(), None if pace is None else pace * tokens)
                if stops < self.max_stops:
                    self._running.add(run)
            try:
                found = infer(run.options)
                if tokens and not run.stopped:
                    self._paced((time.monotonic() - run.started) / tokens)
                return found
            except Exception:
                if not run.stopped:
                    raise
            finally:
                with self._ended:
                    self._running.discard(run)
            stops += 1
            with self._ended:
                self.stopped += 1
            metrics.BACKLOG_YIELDS.labels(self.model, "stopped").inc()

    def _paced(self, seconds_per_token: float) -> None:
        with self._ended:
            last = self.seconds_per_token
            self.seconds_per_token = (
                seconds_per_token if last is None else 0.8 * last + 0.2 * seconds_per_token
            )

    @contextmanager
    def _question(self) -> Iterator[None]:
        with self._ended:
            self._questions += 1
            now = time.monotonic()
            for run in [r for r in self._running if r.worth_stopping(now)]:
                run.stop()  # a backlog call early in its run makes way
                self._running.discard(run)
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
            metrics.BACKLOG_YIELDS.labels(self.model, "waited").inc()
            self._ended.wait_for(lambda: self._questions == 0, timeout=self.max_yield)

    def token_budget(self, budget: int) -> int:
        """The tokens this thread's next inference calls may hold: `budget`, or for a backlog
        on the questions' session while questions come, at most YIELDING_TOKEN_BUDGET."""
        if not is_backlog() or current() != 0:
            return budget
        with self._ended:
            asked = self._questions or time.monotonic() - self._last_question < RECENT_SECONDS
        return min(budget, YIELDING_TOKEN_BUDGET) if asked else budget


def _run_options() -> Any:
    import onnxruntime

    return onnxruntime.RunOptions()
