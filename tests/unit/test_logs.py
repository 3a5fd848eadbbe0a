"""What the process's log handler lets through, and how it formats it."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator

import pytest

from worker import escapes, logs


@contextlib.contextmanager
def logged(log_format: str) -> Iterator[io.StringIO]:
    """The CLI's logging in `log_format`, writing to a buffer instead of stderr."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure(log_format, "INFO")
        buffer = io.StringIO()
        handler = root.handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(buffer)
        yield buffer
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """The CLI's logging (JSON), writing to a buffer instead of stderr."""
    with logged("json") as buffer:
        yield buffer


def test_root_logger_chatter_is_dropped_but_not_its_warnings(output: io.StringIO) -> None:
    logging.info('Quantization parameters for tensor:"x" not specified')  # what onnxruntime does
    logging.warning("a library's warning")
    logging.getLogger("worker.test").info("ours, at INFO")
    lines = [json.loads(line) for line in output.getvalue().splitlines()]
    assert [(line["logger"], line["message"]) for line in lines] == [
        ("root", "a library's warning"),
        ("worker.test", "ours, at INFO"),
    ]


def test_passwords_never_reach_the_log(output: io.StringIO) -> None:
    logging.getLogger("worker.test").error(
        "cannot connect: %s", "postgresql://app:hunter2-secret@db:5432/app"
    )
    assert "hunter2-secret" not in output.getvalue()
    assert "db:5432/app" in output.getvalue()


def test_a_postgres_error_with_context_is_one_text_line() -> None:
    with logged("text") as buffer:
        logging.getLogger("worker.pipeline.stages").warning(
            "row failed: %s",
            "loading the content failed: boom\nCONTEXT:  PL/pgSQL function body_of(docs) line 3"
            " at RAISE",
        )
    text = buffer.getvalue()
    assert text.count("\n") == 1
    assert "boom | CONTEXT:  PL/pgSQL function body_of(docs) line 3 at RAISE" in text


# A tenant's table name, content or error: an escape sequence that clears the screen and sets the
# window's title, a C1 control sequence introducer, a right-to-left override, a tab.
HOSTILE = "docs\x1b[2J\x1b]0;owned\x07\x9b31m\u202etxt.exe\tend"


def test_a_tenants_text_in_a_text_log_line_is_shown_not_obeyed() -> None:
    with logged("text") as buffer:
        logging.getLogger("worker.test").warning("row of %s failed", HOSTILE)
    line = buffer.getvalue().rstrip("\n")
    assert line.isprintable() and "\n" not in line
    assert line.endswith("row of " + escapes.visible(HOSTILE) + " failed")


# The two tests below run in this order (a module's tests run in file order, the file in one
# process): the first configures logging as cli.main() does, in a test capturing its stderr.
def test_the_cli_configures_logging_in_a_test(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("text", "INFO")
    logging.getLogger("worker.test").warning("said while captured")
    assert "said while captured" in capsys.readouterr().err


def test_no_handler_a_test_left_writes_to_its_closed_capture() -> None:
    """Every record after the test above went to its closed capture: "--- Logging error ---
    ValueError: I/O operation on closed file" (in CI, from in-process workers' threads)."""
    closed = [
        handler
        for handler in logging.getLogger().handlers
        if getattr(getattr(handler, "stream", None), "closed", False)
    ]
    assert closed == []
