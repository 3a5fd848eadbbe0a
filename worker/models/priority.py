"""Questions before backlog: a thread that embeds backlog work (the pipeline's embed stage)
runs at a lower CPU priority, a higher nice value, for the rest of its life, and so do the
inference threads of the sessions it uses.

onnxruntime gives each session a pool of intra-op threads, made when the session is made and
inheriting the priority of the thread that made it. So the embedder keeps a session per
priority (worker/models/embedder.py: Embedder._lane_session), each made by a thread of that
priority: a question's inference runs on threads at the normal priority, the backlog's on
niced ones, and the kernel's scheduler gives a question's threads the cores as soon as they
want them (at nice 10 a niced thread weighs about a tenth of a normal one), without a
backlog inference call having to finish first. While no question arrives, the backlog has
every core: the priority takes nothing from it.

The price is a second session of each model the backlog and questions share (its weights and
arena: about 100 MB for all-MiniLM-L6-v2, 170 MB for gte-small), made only in a process that
serves HTTP and embeds a backlog (worker/process/embedding.py). A thread cannot raise its
priority again without privileges, so only threads that never answer a question are niced.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

logger = logging.getLogger(__name__)

_lane = threading.local()


def lower(nice: int) -> None:
    """This thread embeds backlog work from now on, at `nice` (1 to 19; 0: it stays as it
    is). Where threads cannot be niced (not Linux, a refused setpriority) it stays at its
    priority and says so in the log."""
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
