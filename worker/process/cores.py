"""Whether the workers on this machine ask for more embedding threads than it has cores.

Each worker runs its local model on EMBED_THREADS threads, by default every core it may use:
right for one worker, but three on two cores make six busy threads that slow each other and the
Postgres beside them, with nothing in the logs to say why. The workers are found the way an
operator would find them, as `embed-worker run` processes in /proc (those this process can see:
another container's are not, and there the container's CPU limit is what counts).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from worker.models.onnx import resolve_threads

# Interpreter options that take the next word as their value (`python -X importtime -m ...`).
_INTERPRETER_VALUES = frozenset({"-X", "-W", "-Q"})


def is_worker_command(argv: Sequence[str]) -> bool:
    """`embed-worker run ...` (the console script, run by its interpreter or not) or
    `python -m worker run ...`. Options before the command are the global ones, which all take
    a value (`--log-format json run`, `--log-format=json run`). A process that only launches
    one (`sudo -u embed embed-worker run`, `timeout 1h python -m worker run`, `uv run ...`) is
    not one: its child is, and counting both told one worker on two cores that two ran."""
    for i, word in enumerate(argv):
        if Path(word).name == "embed-worker":
            rest = iter(argv[i + 1 :])
        elif word == "-m" and argv[i + 1 : i + 2] == ["worker"]:
            rest = iter(argv[i + 2 :])
        else:
            continue
        if not _run_by_itself(argv[:i]):
            return False
        for arg in rest:
            if not arg.startswith("-"):
                return arg == "run"
            if "=" not in arg:
                next(rest, None)  # its value
        return False
    return False


def _run_by_itself(before: Sequence[str]) -> bool:
    """Whether the words before `embed-worker` or `-m worker` are nothing, or its interpreter
    and the interpreter's options (a shebang's script runs as `python3 /path/embed-worker`)."""
    if not before:
        return True
    if not Path(before[0]).name.startswith(("python", "pypy")):
        return False
    words = iter(before[1:])
    for word in words:
        if not word.startswith("-"):
            return False
        if word in _INTERPRETER_VALUES:
            next(words, None)
    return True


def command_lines(proc: Path = Path("/proc")) -> Iterable[list[str]]:
    """The argument vectors of the processes this one can see (none where there is no /proc)."""
    for entry in proc.glob("[0-9]*"):
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile, or hidden
            continue
        yield [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def workers_here() -> int:
    """The `embed-worker run` processes on this machine, this one included (at least 1)."""
    return max(1, sum(1 for argv in command_lines() if is_worker_command(argv)))


def oversubscription(threads: int, cores: int, workers: int) -> str | None:
    """What to tell the operator when `workers` workers of `threads` threads each would need
    more than `cores` cores; None when they fit, or when this one already takes no more than
    its share (a worker that takes more says so itself as it starts: telling this one to set
    what it has set, EMBED_THREADS=1, fixed nothing)."""
    if workers * threads <= cores:
        return None
    fits = max(1, cores // workers)
    if workers == 1:
        return (
            f"EMBED_THREADS={threads} is more than the {_count(cores, 'core')} this worker may"
            f" use: the threads take turns and slow Postgres too; set EMBED_THREADS={cores} or"
            " fewer"
        )
    if threads <= fits:  # one thread, and more workers than cores: no setting of this one fits
        return (
            f"{workers} embed-worker processes run on this machine of {_count(cores, 'core')}:"
            " more workers than cores, so even on one thread each they take turns and slow"
            f" Postgres; run {cores} or fewer here"
        )
    return (
        f"{workers} embed-worker processes run on this machine, and this one embeds on "
        f"{threads} threads: if the others do too, that is {workers * threads} threads on "
        f"{_count(cores, 'core')}, which slow each other and Postgres; set EMBED_THREADS={fits}"
        " on each (cores / workers), or run fewer workers here"
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def warning(threads: int | None) -> str | None:
    """The oversubscription of this machine by its workers, for a worker of EMBED_THREADS
    `threads` (None: every core) about to start."""
    cores = resolve_threads(None)
    return oversubscription(resolve_threads(threads), cores, workers_here())
