"""The progress line and log records sharing stderr from different threads."""

from __future__ import annotations

import io
import logging
import threading

from worker.process.progress import ERASE, ErasingStream


def test_a_record_written_after_a_redraw_still_starts_on_a_clean_line() -> None:
    """The erase happens inside the handler's write, so no redraw can come in between."""
    out = io.StringIO()
    stream = ErasingStream(out)
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("test_progress")
    logger.addHandler(handler)
    logger.propagate = False
    stop = threading.Event()

    def redraw() -> None:
        while not stop.is_set():
            stream.draw("embedded 1 rows · ETA 1 s")

    drawer = threading.Thread(target=redraw)
    drawer.start()
    try:
        for i in range(500):
            logger.warning("record %d", i)
    finally:
        stop.set()
        drawer.join()
        logger.removeHandler(handler)
    text = out.getvalue()
    for i in range(500):
        at = text.index(f"record {i}\n")
        assert text[:at].endswith((ERASE, "\n")), repr(text[max(at - 30, 0) : at])


def test_nothing_is_erased_when_no_progress_was_drawn() -> None:
    out = io.StringIO()
    stream = ErasingStream(out)
    stream.write("a line\n")
    assert out.getvalue() == "a line\n"
