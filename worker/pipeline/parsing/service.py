"""ParseService: the worker's parse processes, the parses waiting for one, and the results
waiting for their rows.

The load stage submits its documents' parses and waits a short while for them
(worker/pipeline/chunks/parses.py); a parse that is not done by then goes on here while its row
is postponed, and its outcome (a document or a failure) waits in `_results` until the row's job
comes back for it. Parses are keyed by
pieces.DocumentId (the database, the target's id and definition version, the row's key and its
content's md5): a job that comes back finds its parse, a changed row gets a new one.

Fairness: each target (a database's target: its table and column, whoever owns it) has its
own queue of parses; a free process takes the next parse of the target with the fewest parses
running, the least recently served first, and no target has more than all processes but one at
once (when there are two or more, as by default): one target's files, whatever they do, leave a
process to the others. A parse that ran out of a budget (time, CPU, memory) or crashed makes its
document a suspect: its retries run at most all processes but one at once, whatever their
targets, and wait behind the parses asked for after them for their budget's time (unless no
other parse could run). So retries of hostile files never hold every process, and a target's new
documents pass its own suspect files (a Markdown file does not wait behind two retries of files
that ran out of time). What is left: two targets' new hostile files at once can hold two
processes for one budget.

Bounds: at most MAX_QUEUED parses (MAX_QUEUED_PER_TARGET per target, MAX_QUEUED_BYTES of
content) wait for a process; a parse past them is not taken (its row is postponed and asks
again). At most MAX_RESULTS outcomes (MAX_RESULT_BYTES of text and content) wait for their
rows, for at most RESULT_SECONDS; the oldest go first, never the newest (a document larger than
the bound waits for its row too).
"""

from __future__ import annotations

import atexit
import contextlib
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from worker import exceptions, metrics
from worker.pipeline.documents.extracted import ExtractedDocument
from worker.pipeline.parsing.process import Outcome, Parse, ParseProcess
from worker.pipeline.pieces import DocumentId, Known

MAX_QUEUED = 64
MAX_QUEUED_PER_TARGET = 16
MAX_QUEUED_BYTES = 16 * 2**20
MAX_RESULTS = 64
MAX_RESULT_BYTES = 16 * 2**20
RESULT_SECONDS = 600.0
MAX_SUSPECTS = 4096  # documents remembered as suspects, the most recent

Tenant = tuple[str, int]  # a database's target: the parses scheduled fairly


@dataclass
class _Entry:
    """A parse asked for: queued, running, or done (its outcome)."""

    key: DocumentId
    job: Parse
    outcome: Outcome | None = None
    done_at: float = 0.0
    running: bool = False
    suspect: bool = False  # an earlier parse of the same document ran out of a budget
    due: float = 0.0  # when its turn comes (time.monotonic()): a suspect's after its budget
    waited_out: bool = False  # a batch's wait ended while it was not done

    @property
    def tenant(self) -> Tenant:
        return (self.key[0], self.key[1])

    @property
    def held_bytes(self) -> int:
        text = self.outcome.text if isinstance(self.outcome, ExtractedDocument) else ""
        return len(self.job.content) + len(text)


@dataclass
class _State:
    entries: dict[DocumentId, _Entry] = field(default_factory=dict)  # every parse we know of
    queues: dict[Tenant, deque[_Entry]] = field(default_factory=dict)  # per target, in turn
    running: Counter[Tenant] = field(default_factory=Counter)  # parses running, per target
    served: dict[Tenant, int] = field(default_factory=dict)  # when each target was last served
    suspects: OrderedDict[DocumentId, None] = field(default_factory=OrderedDict)  # oldest first
    suspects_running: int = 0
    turns: int = 0  # parses handed out so far (the clock of `served`)
    results: OrderedDict[DocumentId, _Entry] = field(
        default_factory=OrderedDict
    )  # done, oldest first


class ParseService:
    """The pool of parse processes (`processes` of them, each served by a thread of its own)."""

    def __init__(self) -> None:
        self._state = _State()
        self._changed = threading.Condition()
        self._size = 0  # processes wanted
        self._threads: dict[int, threading.Thread] = {}
        self._processes: dict[int, ParseProcess] = {}
        self._generation = 0  # close() ends the threads of the generation it ends

    # --- the load stage's side ------------------------------------------------------------------
    def submit(self, key: DocumentId, job: Parse, *, processes: int) -> bool:
        """Asks for `key`'s parse (nothing new if it was asked already). False when the queue
        is full: the caller asks again later."""
        with self._changed:
            self._resize(processes)
            state = self._state
            if key in state.entries:
                return True
            _drop_superseded(state, key)
            tenant = (key[0], key[1])
            queue = state.queues.get(tenant)
            queued = sum(len(q) for q in state.queues.values())
            queued_bytes = sum(len(e.job.content) for q in state.queues.values() for e in q)
            if queue and (
                len(queue) >= MAX_QUEUED_PER_TARGET
                or queued >= MAX_QUEUED
                or queued_bytes + len(job.content) > MAX_QUEUED_BYTES
            ):
                return False
            entry = _Entry(key, job, suspect=key in state.suspects, due=time.monotonic())
            if entry.suspect:
                entry.due += job.budget.seconds
            state.entries[key] = entry
            state.queues.setdefault(tenant, deque()).append(entry)
            self._changed.notify_all()
            return True

    def wait(self, keys: Iterable[DocumentId], deadline: float, *, busy: bool = False) -> None:
        """Until these parses are done (or forgotten), or `deadline` (time.monotonic()) passed.
        A parse that an earlier wait gave up on (not done by its deadline: a slow one, maybe a
        hostile file's) holds up only a wait with nothing else to do: not `busy` (the caller
        has other rows ready) and none of these parses done."""
        wanted = set(keys)
        with self._changed:
            while True:
                state = self._state
                pending = [
                    entry
                    for key in wanted
                    if (entry := state.entries.get(key)) is not None and key not in state.results
                ]
                if busy or any(key in state.results for key in wanted):
                    awaited = [e for e in pending if not e.waited_out]
                else:
                    awaited = pending  # (the pace of its row's re-reads)
                left = deadline - time.monotonic()
                if not awaited:
                    return
                if left <= 0:
                    for entry in pending:
                        entry.waited_out = True
                    return
                self._changed.wait(left)

    def take(self, key: DocumentId) -> Outcome | None:
        """The parse's outcome, handed out once; None while it is not done (or unknown)."""
        with self._changed:
            entry = self._state.results.pop(key, None)
            if entry is None:
                return None
            del self._state.entries[key]
            return entry.outcome

    def known(
        self, database: str, target_id: int, version: int, keys: list[str]
    ) -> dict[str, Known]:
        """The content of the rows whose parse is asked for or done, by row key: the load stage
        asks the database to send it only where its md5 changed (worker/pipeline/stages.py)."""
        wanted = set(keys)
        with self._changed:
            return {
                key[3]: Known(key[4], entry.job.content)
                for key, entry in self._state.entries.items()
                if key[:3] == (database, target_id, version) and key[3] in wanted
            }

    def close(self) -> None:
        """Ends the processes (a parse running is killed: its row asks again) and their
        threads; the next submit starts them again."""
        with self._changed:
            self._generation += 1
            self._changed.notify_all()
            threads, processes = list(self._threads.values()), list(self._processes.values())
        for process in processes:
            process.kill()
        for thread in threads:
            thread.join(timeout=10)

    # --- the processes' side --------------------------------------------------------------------
    def _resize(self, processes: int) -> None:
        """Starts the threads up to `processes` (each retires itself past it). Holds the lock."""
        if processes < self._size:
            self._changed.notify_all()
        self._size = processes
        for slot in range(processes):
            thread = self._threads.get(slot)
            if thread is None or not thread.is_alive():
                thread = threading.Thread(
                    target=self._serve,
                    args=(slot, self._generation),
                    name=f"parser-{slot + 1}",
                    daemon=True,
                )
                self._threads[slot] = thread
                thread.start()

    def _serve(self, slot: int, generation: int) -> None:
        process = ParseProcess()
        with self._changed:
            self._processes[slot] = process
        try:
            # At once: the first parse should not wait for the imports. A process that does not
            # start is logged; the first parse tries again.
            with contextlib.suppress(exceptions.ParseFailed):
                process.start()
            while True:
                entry = self._next(slot, generation)
                if entry is None:
                    return
                started = time.monotonic()
                try:
                    outcome = process.parse(entry.job)
                except exceptions.ParseFailed as exc:  # the process did not start
                    outcome = exc
                except Exception as exc:  # ours, not the document's: its row fails this attempt
                    process.close(kill=True)
                    outcome = exceptions.ParseFailed("crash", f"parsing failed: {exc!r}")
                _count(outcome, time.monotonic() - started)
                self._finish(entry, outcome, generation)
        finally:
            process.close(kill=True)
            with self._changed:
                if self._processes.get(slot) is process:
                    del self._processes[slot]

    def _next(self, slot: int, generation: int) -> _Entry | None:
        """The next parse for this slot's process: waits for one; None when the slot retires."""
        with self._changed:
            while generation == self._generation and slot < self._size:
                entry = _pick(self._state, max(1, self._size - 1))
                if entry is not None:
                    return entry
                self._changed.wait()
            return None

    def _finish(self, entry: _Entry, outcome: Outcome, generation: int) -> None:
        """Keeps the outcome for its row; forgets the parse instead when it was superseded, or
        killed by close() (its row asks again)."""
        with self._changed:
            state = self._state
            state.running[entry.tenant] -= 1
            state.suspects_running -= entry.suspect
            if not state.running[entry.tenant] and entry.tenant not in state.queues:
                del state.running[entry.tenant]  # nothing of it left: forgotten
                state.served.pop(entry.tenant, None)
            entry.running, entry.outcome, entry.done_at = False, outcome, time.monotonic()
            if generation == self._generation:
                _note_suspect(state, entry.key, outcome)
                if state.entries.get(entry.key) is entry:
                    state.results[entry.key] = entry
                    _trim(state)
            elif state.entries.get(entry.key) is entry:
                del state.entries[entry.key]
            self._changed.notify_all()


def _pick(state: _State, cap: int) -> _Entry | None:
    """Takes the next parse: of the target with the fewest running (under `cap`), the least
    recently served first (one never served, or not since its queue last emptied, first); of
    its parses, the first due. A suspect's comes only once it is due, unless nothing else can
    run, and while fewer than `cap` suspects' run."""
    suspects_open = state.suspects_running < cap
    allowed = [
        entry
        for tenant, queue in state.queues.items()
        if state.running[tenant] < cap
        for entry in queue
        if suspects_open or not entry.suspect
    ]
    if not allowed:
        return None
    now = time.monotonic()
    due = [e for e in allowed if e.due <= now] or allowed
    entry = min(due, key=lambda e: (state.running[e.tenant], state.served.get(e.tenant, -1), e.due))
    queue = state.queues[entry.tenant]
    queue.remove(entry)
    if not queue:
        del state.queues[entry.tenant]
    state.running[entry.tenant] += 1
    state.suspects_running += entry.suspect
    state.turns += 1
    state.served[entry.tenant] = state.turns
    entry.running = True
    return entry


def _note_suspect(state: _State, key: DocumentId, outcome: Outcome) -> None:
    """Remembers a document whose parse ran out of a budget or crashed (ParseFailed) as a
    suspect, the most recent MAX_SUSPECTS of them; one that parsed, or failed as a document
    does (for good), is one no more."""
    if not isinstance(outcome, exceptions.ParseFailed):
        state.suspects.pop(key, None)
        return
    state.suspects[key] = None
    state.suspects.move_to_end(key)
    while len(state.suspects) > MAX_SUSPECTS:
        state.suspects.popitem(last=False)


def _drop_superseded(state: _State, key: DocumentId) -> None:
    """Forgets a queued parse of the same row under an older content or definition."""
    row = (key[0], key[1], key[3])
    for other in [k for k in state.entries if (k[0], k[1], k[3]) == row]:
        entry = state.entries.pop(other)  # a running one ends within its budget, unheard
        state.results.pop(other, None)
        queue = state.queues.get(entry.tenant)
        if queue is not None and entry in queue:
            queue.remove(entry)
            if not queue:
                del state.queues[entry.tenant]


def _trim(state: _State) -> None:
    """Drops the oldest results past the bounds, never the newest (the one just done)."""
    now = time.monotonic()
    held = sum(e.held_bytes for e in state.results.values())
    while len(state.results) > 1:
        key, oldest = next(iter(state.results.items()))
        if (
            len(state.results) <= MAX_RESULTS
            and held <= MAX_RESULT_BYTES
            and now - oldest.done_at <= RESULT_SECONDS
        ):
            return
        del state.results[key]
        del state.entries[key]
        held -= oldest.held_bytes


def _count(outcome: Outcome, seconds: float) -> None:
    metrics.PARSE_SECONDS.observe(seconds)
    if isinstance(outcome, exceptions.ParseFailed):
        metrics.PARSE_FAILURES.labels(outcome.cause).inc()
    elif isinstance(outcome, exceptions.DocumentTooLarge):
        metrics.PARSE_FAILURES.labels("too_large").inc()
    elif isinstance(outcome, exceptions.DocumentError):
        metrics.PARSE_FAILURES.labels("unreadable").inc()


SERVICE = ParseService()
atexit.register(SERVICE.close)
