"""A frame redrawn every few seconds until Ctrl-C (`status --watch`): in place on a terminal, one
timestamped frame after another otherwise; or, with `--json`, one line of JSON a refresh.

Ctrl-C sets an event here instead of raising KeyboardInterrupt wherever it lands: one that
lands while Python runs a finalizer (psycopg's cursors and connections have them, and each frame
makes a cursor) is printed as "Exception ignored" and dropped, and the loop went on redrawing
(a test of `status --watch` saw it once on a loaded machine). The frame being drawn finishes
first; a second Ctrl-C interrupts at once (KeyboardInterrupt), a database that hangs included.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from types import FrameType

from worker.escapes import visible

CLEAR_SCREEN = "\x1b[H\x1b[J"  # cursor home, erase below: the next frame replaces this one


def every(interval: float, header: str, frame: Callable[[], list[str]]) -> None:
    """Draws `frame()` under `header` every `interval` seconds until Ctrl-C."""
    in_place = sys.stdout.isatty()
    with ctrl_c() as stop:
        while not stop.is_set():
            lines = frame()
            stamp = datetime.now(UTC).strftime("%H:%M:%S UTC")
            text = [f"{header}, {stamp} (every {interval:g} s; Ctrl-C to stop)", ""]
            text += [visible(line) for line in lines]  # a tenant's names: shown, not obeyed
            sys.stdout.write((CLEAR_SCREEN if in_place else "\n") + "\n".join(text) + "\n")
            sys.stdout.flush()
            stop.wait(interval)


def stream(interval: float, document: Callable[[], str]) -> None:
    """Writes `document()` as one line every `interval` seconds until Ctrl-C (`status --watch
    --json`: newline-delimited JSON, one document per refresh, for a program to read)."""
    with ctrl_c() as stop:
        while not stop.is_set():
            sys.stdout.write(document() + "\n")
            sys.stdout.flush()
            stop.wait(interval)


@contextlib.contextmanager
def ctrl_c() -> Iterator[threading.Event]:
    """An event that the first SIGINT sets (the second raises KeyboardInterrupt); the handler
    from before is put back after. Off the main thread, which cannot set handlers, an event that
    only the caller sets."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def on_sigint(_signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
