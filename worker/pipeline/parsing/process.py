"""One parse process, from the worker's side: started when first needed, given one parse at a
time, killed when a parse overruns its wall time, replaced when it dies or has grown.

Whatever the process does comes back as one outcome: the document, the DocumentError the bytes
raised, or a ParseFailed naming what went wrong (time, CPU, memory, a crash). Nothing it sends
is believed unchecked (wire.py), and nothing it does can block the caller past the budget: every
read and write of its pipes has the parse's deadline."""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import worker
from worker import exceptions
from worker.pipeline.documents.extracted import ExtractedDocument
from worker.pipeline.parsing import wire
from worker.pipeline.parsing.budgets import MIB, Budget

logger = logging.getLogger(__name__)

START_SECONDS = 60.0  # a process's imports before its first parse: in no parse's budget
EXIT_SECONDS = 2.0  # a process whose pipe closed has this long to report how it ended
COMMAND = (sys.executable, "-P", "-m", "worker.pipeline.parsing.child")

Outcome = ExtractedDocument | exceptions.DocumentError | exceptions.ParseFailed


@dataclass(frozen=True)
class Parse:
    """What to parse: a row's content as loaded (base64 text of a bytea column when
    `is_bytes`), as `format` (None: detected), with the ceiling on its text and its budget."""

    content: str
    format: str | None
    is_bytes: bool
    max_bytes: int
    budget: Budget

    @property
    def size(self) -> int:
        return input_size(self.content, is_bytes=self.is_bytes)

    @property
    def label(self) -> str:
        return f"{self.format} document" if self.format else "document"


def input_size(content: str, *, is_bytes: bool) -> int:
    """The bytes of a row's content: a bytea column's, not its base64's (Postgres's encode()
    breaks base64 into lines of 76)."""
    if is_bytes:
        return (len(content) - content.count("\n")) * 3 // 4
    return len(content)


class _Overrun(Exception):
    """The parse's deadline passed."""


class ParseProcess:
    """A parse process, replaced as needed; used by one thread at a time."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._ready_vm = 0  # its address space once ready, before any parse

    def start(self) -> None:
        """Starts the process unless it runs; ParseFailed when it cannot start."""
        if self._process is None:
            self._start()

    def kill(self) -> None:
        """Kills the process from another thread: the parse running ends as a crash."""
        process = self._process
        if process is not None:
            process.kill()

    def parse(self, job: Parse) -> Outcome:
        self.start()
        budget = job.budget
        deadline = time.monotonic() + budget.seconds
        header = wire.request(
            format=job.format,
            is_bytes=job.is_bytes,
            max_bytes=job.max_bytes,
            cpu_seconds=budget.cpu_seconds,
            memory_bytes=budget.memory_bytes,
        )
        content = job.content.encode()
        # The text is within what the parse could hold (its budget), or the content's own.
        bound = budget.memory_bytes + len(content)
        try:
            self._send(wire.frame(header, content), deadline)
            del content
            answer, payload = self._receive(deadline, max_payload=bound)
            outcome = _outcome(job, answer, payload)
        except _Overrun:
            self.close(kill=True)
            return exceptions.ParseFailed(
                "time",
                f"{job.label}: parsing took longer than {budget.seconds:.3g} s, the budget of "
                f"its {_size(job.size)} (EMBED_PARSE_TIMEOUT_SECONDS)",
            )
        except (EOFError, BrokenPipeError):
            return self._ended(job)
        except wire.WireError as exc:
            self.close(kill=True)
            return exceptions.ParseFailed("crash", f"{job.label}: the parser answered {exc}")
        if int(answer.get("peak", 0)) > self._ready_vm + budget.memory_bytes // 2:
            self.close()  # grown: its freed memory is not given back to the system
        return outcome

    def close(self, *, kill: bool = False) -> None:
        """Ends the process: at once with `kill`, else by closing its stdin."""
        process, self._process = self._process, None
        if process is None:
            return
        if not kill:
            assert process.stdin is not None
            try:
                process.stdin.close()
                process.wait(EXIT_SECONDS)
            except (OSError, subprocess.TimeoutExpired):
                kill = True
        if kill:
            process.kill()
            process.wait()
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()

    # --- the process ----------------------------------------------------------------------------
    def _start(self) -> None:
        """A fresh interpreter, never a fork of the worker (whose threads hold locks a fork would
        copy held). Its environment is ours only: no DATABASE_URL, no keys."""
        process = subprocess.Popen(
            COMMAND,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={"PYTHONPATH": str(Path(worker.__file__).parent.parent)},
            close_fds=True,
            start_new_session=True,  # a terminal's Ctrl-C is the worker's to handle, not its
        )
        assert process.stdin is not None
        os.set_blocking(process.stdin.fileno(), False)
        self._process = process
        try:
            ready, _ = self._receive(time.monotonic() + START_SECONDS, max_payload=0)
        except (_Overrun, EOFError, wire.WireError) as exc:
            self.close(kill=True)
            logger.error("a parse process did not start: %r", exc)
            raise exceptions.ParseFailed(
                "crash", f"the parse process did not start ({exc!r})"
            ) from None
        self._ready_vm = int(ready.get("vm", 0))

    def _send(self, parts: list[bytes], deadline: float) -> None:
        assert self._process is not None and self._process.stdin is not None
        fd = self._process.stdin.fileno()
        for part in parts:
            view = memoryview(part)
            while view:
                _wait(fd, deadline, write=True)
                try:
                    view = view[os.write(fd, view) :]
                except BlockingIOError:
                    continue

    def _receive(self, deadline: float, *, max_payload: int) -> tuple[wire.Header, bytes]:
        assert self._process is not None and self._process.stdout is not None
        fd = self._process.stdout.fileno()

        def read(size: int) -> bytes:
            buffer = bytearray(size)
            view, got = memoryview(buffer), 0
            while got < size:
                _wait(fd, deadline, write=False)
                count = os.readv(fd, [view[got:]])
                if count == 0:
                    raise EOFError
                got += count
            return bytes(buffer)

        return wire.read_frame(read, max_payload=max_payload)

    def _ended(self, job: Parse) -> exceptions.ParseFailed:
        """The process closed its pipe: it died. How, says its exit status."""
        assert self._process is not None
        process = self._process
        try:
            code = process.wait(EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            code = None
        self.close(kill=True)
        if code == -signal.SIGXCPU:
            return exceptions.ParseFailed(
                "cpu",
                f"{job.label}: parsing used more than {job.budget.cpu_seconds} s of CPU, the "
                f"budget of its {_size(job.size)} (EMBED_PARSE_CPU_SECONDS)",
            )
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else "?"
            how = f"signal {-code}, {name}"
        else:
            how = f"exit status {code}" if code is not None else "its pipe closed"
        return exceptions.ParseFailed("crash", f"{job.label}: the parser crashed ({how})")


def _outcome(job: Parse, answer: wire.Header, payload: bytes) -> Outcome:
    kind = answer.get("kind")
    if kind == wire.DOCUMENT:
        return wire.document_from(answer, payload)
    if kind == wire.MEMORY:
        return exceptions.ParseFailed(
            "memory",
            f"{job.label}: parsing needed more than {job.budget.memory_mib} MiB "
            "(EMBED_PARSE_MEMORY_MB)",
        )
    if kind == wire.UNREADABLE:
        format, reason = str(answer.get("format", "unknown")), str(answer.get("reason", ""))
        if answer.get("too_large") is True:
            return exceptions.DocumentTooLarge(format, reason)
        return exceptions.DocumentError(format, reason)
    raise wire.WireError(f"an answer of unknown kind {kind!r}")


def _wait(fd: int, deadline: float, *, write: bool) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Overrun
    ready = select.select([], [fd], [], left) if write else select.select([fd], [], [], left)
    if not any(ready):
        raise _Overrun


def _size(size: int) -> str:
    return f"{size / MIB:.1f} MiB" if size >= MIB else f"{size / 1024:.0f} KiB"
