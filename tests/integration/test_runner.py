"""The worker run inside another program leaves the program's signal handlers as it found them."""

from __future__ import annotations

import signal
import threading
from types import FrameType

from worker.config import Settings
from worker.models.loaded import LoadedModels
from worker.process.runner import Worker


def test_the_signal_handlers_are_restored_when_the_worker_stops(
    settings: Settings, embedders: LoadedModels
) -> None:
    assert threading.current_thread() is threading.main_thread()

    def ours(_signum: int, _frame: FrameType | None) -> None:
        pass

    before_term = signal.signal(signal.SIGTERM, ours)
    before_int = signal.getsignal(signal.SIGINT)
    try:
        worker = Worker(settings, once=True, embedders=embedders, progress=False)
        assert worker.run() == 0
        assert signal.getsignal(signal.SIGTERM) is ours
        assert signal.getsignal(signal.SIGINT) is before_int
    finally:
        signal.signal(signal.SIGTERM, before_term)
