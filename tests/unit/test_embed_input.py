"""`embed` of text that is not UTF-8 (an argument, as Python keeps its bytes with
surrogateescape, or a line of standard input): a usage error naming which input, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.models import MINILM, require_minilm, shared_models_dir


def _embed(
    *argv: bytes, stdin: bytes = b"", lang: str = "C.UTF-8"
) -> subprocess.CompletedProcess[bytes]:
    require_minilm()
    env = {**os.environ, "EMBED_MODEL_PATH": str(shared_models_dir()), "LC_ALL": lang}
    return subprocess.run(
        [sys.executable.encode(), b"-m", b"worker", b"embed", b"--model", MINILM.encode(), *argv],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=120,
    )


@pytest.mark.parametrize("lang", ["C.UTF-8", "C"])
def test_an_argument_that_is_not_utf8_is_a_usage_error(lang: str) -> None:
    result = _embed(b"fine", b"caf\xe9 au lait", lang=lang)
    assert result.returncode == 2, result.stderr
    said = result.stderr.decode()
    assert "Traceback" not in said
    assert "TEXT 2 is not UTF-8 (byte 0xe9 at byte 4)" in said, said
    assert result.stdout == b""


def test_a_line_of_standard_input_that_is_not_utf8_is_a_usage_error() -> None:
    result = _embed(b"-", stdin=b"fine\r\nline two\nba\xffd line\n")
    assert result.returncode == 2, result.stderr
    said = result.stderr.decode()
    assert "Traceback" not in said
    assert "line 3 of standard input is not UTF-8 (byte 0xff at byte 3)" in said, said
    assert result.stdout == b""


def test_utf8_standard_input_is_embedded_a_line_a_text() -> None:
    result = _embed(b"-", stdin="café\r\n文書\n".encode())
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(b"],") == 1  # two vectors
