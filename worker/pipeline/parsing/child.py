"""A parse process: reads one request at a time on its stdin, parses the document under the
request's budget, answers on its stdout (worker/pipeline/parsing/wire.py), until stdin closes.

The worker starts it with `python -P -m worker.pipeline.parsing.child` (process.py): a fresh
interpreter, never a fork of the worker, which imports the document libraries and nothing else
(no models, no database driver, no settings: it gets no credentials, not even the worker's
environment). Before each parse it sets its own limits, relative to what it uses then:
RLIMIT_AS (an allocation past the memory budget fails) and RLIMIT_CPU (past the CPU budget the
kernel sends SIGXCPU, which ends the process: the worker reports the signal). The worker kills
it past the wall-time budget. Files are not written (RLIMIT_FSIZE 0), no core is dumped, and
it dies with the thread of the worker that started it.

Measured with the 120 MiB-XML DOCX (21 million empty elements): under RLIMIT_AS lxml's failed
allocation surfaces as an XMLSyntaxError ("unknown error"), pypdf's and zlib's as MemoryError;
a parse is told apart as out of memory by either a MemoryError or a peak address space within
MEMORY_MARGIN of the limit. RLIMIT_DATA gives the same, but leaves mmap'd memory uncounted on
kernels before 4.7. A parse that runs out may leave not a byte to spare, so the first thing its
handler does is lift RLIMIT_AS, allocating nothing: with pypdf reading a 25,000-page PDF, the
handler's first allocation failed, the exception left the process (`SystemError: error return
without exception set`, exit status 1: "crashed") about half the time. Whatever still escapes
a parse is answered as its memory budget (nothing else in the handler can fail).
"""

from __future__ import annotations

import base64
import ctypes
import logging
import math
import os
import resource
import signal
import sys
import warnings
from collections.abc import Callable
from typing import BinaryIO

from worker import exceptions
from worker.pipeline.documents.extraction import extract
from worker.pipeline.parsing import wire

MEMORY_MARGIN = 0.1  # of the budget: a parse that peaked this close to its limit ran out
# RLIMIT_AS lifted (to its hard limit, which the process never changes), made before any parse:
# lifting it must allocate nothing, when a parse has left no memory to spare.
_NO_LIMIT = (resource.getrlimit(resource.RLIMIT_AS)[1],) * 2
_PR_SET_PDEATHSIG = 1


def main() -> None:
    requests, answers = _channel()
    _harden()
    answer(answers, {"kind": wire.READY, "vm": _status("VmSize")})
    while True:
        try:
            header, payload = wire.read_frame(_reader(requests), max_payload=2**40)
        except EOFError:
            return  # the worker closed our stdin: it is done with us
        content = _content(header, payload)
        del payload  # (the content is all the parse needs: its memory is not the budget's)
        try:
            reply = parse(header, content)
        except BaseException:  # parse()'s own handler failed: out of memory before the lift
            resource.setrlimit(resource.RLIMIT_AS, _NO_LIMIT)
            _set_limits(None, None)
            reply = {"kind": wire.MEMORY, "peak": _status("VmPeak")}, b""
        del content
        answer(answers, *reply)


def parse(header: wire.Header, content: bytes | str) -> tuple[wire.Header, bytes]:
    """One request's answer: the document and its text, or why there is none. The budget is
    the memory the parse takes beyond what the process holds once the content is in it."""
    budget = int(header["memory_bytes"])
    limit = _status("VmSize") + budget
    peak_before = _status("VmPeak")
    _set_limits(limit, int(header["cpu_seconds"]))
    try:
        document = extract(content, max_bytes=int(header["max_bytes"]), format=header["format"])
    except BaseException as exc:  # extract() wraps every library's exception in DocumentError
        # First, and allocating nothing: the parse may have left not a byte to spare.
        resource.setrlimit(resource.RLIMIT_AS, _NO_LIMIT)
        _set_limits(None, None)
        if _ran_out(exc, peak_before, limit, budget):
            return {"kind": wire.MEMORY, "peak": _status("VmPeak")}, b""
        if isinstance(exc, exceptions.DocumentError):
            return _unreadable(exc.format, exc.reason, exc), b""
        return _unreadable("unknown", f"{type(exc).__name__}: {exc}", exc), b""
    _set_limits(None, None)
    return {**wire.document_header(document), "peak": _status("VmPeak")}, document.text.encode()


def _content(header: wire.Header, payload: bytes) -> bytes | str:
    """The row's content: a bytea column's bytes (sent as base64), or a text column's text."""
    return base64.b64decode(payload) if header["base64"] else payload.decode("utf-8")


def _unreadable(format: str, reason: str, exc: BaseException) -> wire.Header:
    return {
        "kind": wire.UNREADABLE,
        "format": format,
        "reason": reason[:2000],
        "too_large": isinstance(exc, exceptions.DocumentTooLarge),
        "peak": _status("VmPeak"),
    }


def _ran_out(exc: BaseException, peak_before: int, limit: int, budget: int) -> bool:
    """Whether a library's error was its allocation failing: a MemoryError behind it, or an
    address space that peaked, during this parse, within the margin of the limit."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, MemoryError):
            return True
        seen = seen.__cause__ or seen.__context__
    peak = _status("VmPeak")
    return peak > peak_before and peak >= limit - MEMORY_MARGIN * budget


def answer(out: BinaryIO, header: wire.Header, payload: bytes = b"") -> None:
    for part in wire.frame(header, payload):
        out.write(part)
    out.flush()


# --- the process ------------------------------------------------------------------------------
def _channel() -> tuple[BinaryIO, BinaryIO]:
    """The protocol's pipes, moved off fds 0 and 1: a library that prints cannot corrupt a
    frame, and one that reads stdin reads nothing."""
    requests = os.fdopen(os.dup(0), "rb")
    answers = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    return requests, answers


def _harden() -> None:
    """No core files, no files written, gone with the worker; libraries' warnings and logging
    silenced (hostile bytes can make a library log a line per object)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write fails (EFBIG) instead
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() == 1:  # the worker was gone before the line above
            os._exit(0)
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)


def _set_limits(memory: int | None, cpu_seconds: int | None) -> None:
    """This parse's limits (None: lifted), relative to what the process has used so far."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (hard if memory is None else memory, hard))
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if cpu_seconds is None:
        resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))
        return
    used = resource.getrusage(resource.RUSAGE_SELF)
    resource.setrlimit(
        resource.RLIMIT_CPU, (math.ceil(used.ru_utime + used.ru_stime) + cpu_seconds, hard)
    )


def _status(field: str) -> int:
    """A size from /proc/self/status, in bytes (0 where there is none)."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(field.encode() + b":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _reader(stream: BinaryIO) -> Callable[[int], bytes]:
    def read(size: int) -> bytes:
        data = stream.read(size)
        if len(data) < size:
            raise EOFError
        return data

    return read


if __name__ == "__main__":
    main()
