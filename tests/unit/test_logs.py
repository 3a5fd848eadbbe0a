"""What the process's log handler lets through, and how it formats it."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from worker import logs


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """The CLI's logging (JSON), writing to a buffer instead of stderr."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logs.configure("json", "INFO")
    buffer = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    yield buffer
    root.handlers[:], level = saved
    root.setLevel(level)


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
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure("text", "INFO")
        buffer = io.StringIO()
        handler = root.handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(buffer)
        logging.getLogger("worker.pipeline.stages").warning(
            "row failed: %s",
            "loading the content failed: boom\nCONTEXT:  PL/pgSQL function body_of(docs) line 3"
            " at RAISE",
        )
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    text = buffer.getvalue()
    assert text.count("\n") == 1
    assert "boom | CONTEXT:  PL/pgSQL function body_of(docs) line 3 at RAISE" in text
