"""`status --watch`'s loop (worker/cli/redraw.py): Ctrl-C ends it even when it lands in a
finalizer, where Python drops a KeyboardInterrupt ("Exception ignored in ...") and the loop
used to go on redrawing; a second Ctrl-C interrupts at once; the previous handler comes back."""

from __future__ import annotations

import io
import os
import signal

import pytest

from worker.cli import redraw


class SigintWhenFinalized:
    """Sends this process SIGINT from its finalizer: the Python-level handler runs in there."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        signal.getsignal(signal.SIGINT)  # (a call: the pending handler runs at the latest here)


def test_ctrl_c_that_lands_in_a_finalizer_ends_the_redraw(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.stdout", io.StringIO())
    frames: list[int] = []

    def frame() -> list[str]:
        frames.append(len(frames))
        assert len(frames) < 50, "Ctrl-C was lost: still redrawing"
        if len(frames) == 2:
            SigintWhenFinalized()  # collected at once
        return [f"frame {len(frames)}"]

    previous = signal.getsignal(signal.SIGINT)
    redraw.every(0.001, "header", frame)
    assert frames == [0, 1]  # the frame being drawn finished; no other
    assert signal.getsignal(signal.SIGINT) is previous


def test_a_second_ctrl_c_interrupts_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdout", io.StringIO())
    drawn: list[str] = []

    def frame() -> list[str]:
        os.kill(os.getpid(), signal.SIGINT)  # the first: the loop ends after this frame
        for _ in range(1000):  # (a loop: its handler has run once this ends)
            pass
        os.kill(os.getpid(), signal.SIGINT)  # the second: now (a database that hangs, say)
        drawn.append("never")
        return []

    with pytest.raises(KeyboardInterrupt):
        redraw.every(0.001, "header", frame)
    assert drawn == []
