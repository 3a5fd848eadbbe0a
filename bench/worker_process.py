"""Running `embed-worker` for a benchmark and reading what it cost: wall time, CPU time and
peak RSS of that one process (os.wait4 gives its own rusage, no polling)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

# Jobs a worker on the default queue has still to do: its live queue's messages and the
# triggers' inbox rows not yet moved into it (sql/22_inbox.sql).
# Both lanes: a statement of more than embeddings.bulk_statement_rows rows (the benches' loads)
# queues its keys in the backfill lane.
QUEUED_JOBS = (
    "SELECT (SELECT count(*) FROM pgmq.q_embedding_jobs)"
    " + (SELECT count(*) FROM pgmq.q_embedding_jobs_backfill)"
    " + (SELECT count(*) FROM embeddings.inbox)"
)


def rss_mb(pid: int) -> float | None:
    """The resident memory of a running process now, in MB (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


@dataclass(frozen=True)
class ProcessCost:
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    returncode: int

    def cpu_utilisation(self, cores: int) -> float:
        """Share of the cores kept busy over the run (1.0 = all of them, all the time)."""
        return self.cpu_s / (self.wall_s * cores) if self.wall_s > 0 else 0.0


def worker_env(dsn: str, model: str, model_path: Path, **settings: str | int) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "EMBED_MODEL": model,
        "EMBED_MODEL_PATH": str(model_path),
        "EMBED_LOG_LEVEL": "WARNING",
    }
    env.update({k: str(v) for k, v in settings.items()})
    return env


def start(env: dict[str, str], *args: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Starts `embed-worker run`. With BENCH_WORKER_LOG set to a directory, every worker a bench
    starts without a log of its own logs there at INFO (worker-<n>.log): its batch lines say
    where the time went."""
    logs = os.environ.get("BENCH_WORKER_LOG")
    if log is None and logs:
        directory = Path(logs)
        directory.mkdir(parents=True, exist_ok=True)
        log = directory / f"worker-{len(list(directory.glob('worker-*.log'))) + 1}.log"
        env = {**env, "EMBED_LOG_LEVEL": "INFO"}
    out = log.open("wb") if log else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "worker", "run", *args],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def wait_ready(
    process: subprocess.Popen[bytes], port: int, log: IO[bytes], *, seconds: float, what: str
) -> None:
    """Waits until the worker `process` answers GET /readyz on `port`; RuntimeError naming
    `what` (with the tail of its `log`) when it exits first or is not ready within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5):
                return
        except OSError:
            if process.poll() is not None:
                log.seek(0)
                tail = log.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"{what} exited:\n{tail}") from None
            time.sleep(0.2)
    raise RuntimeError(f"{what} never became ready")


def _high_water_kb(pid: int) -> int:
    """VmHWM: the process's own peak RSS. (rusage's ru_maxrss would not do: Linux carries the
    forking parent's peak across exec, so every child would report at least this script's.)"""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def wait(process: subprocess.Popen[bytes], started: float) -> ProcessCost:
    peak_kb = 0
    # WNOWAIT: look without reaping, so that wait4 below still gets the child's rusage.
    while os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        peak_kb = max(peak_kb, _high_water_kb(process.pid))
        time.sleep(0.05)
    peak_kb = max(peak_kb, _high_water_kb(process.pid))  # a zombie still has its status
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return ProcessCost(
        wall_s=time.perf_counter() - started,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=peak_kb / 1024,
        returncode=process.returncode,
    )


def run_once(env: dict[str, str]) -> ProcessCost:
    """`embed-worker run --once`, timed from process start (model load included)."""
    started = time.perf_counter()
    return wait(start(env, "--once", "--no-progress"), started)
