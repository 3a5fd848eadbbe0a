"""Running the real `embed-worker` as a subprocess, and waiting on conditions with a deadline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.support.cluster import free_port

T = TypeVar("T")


def run_cli(
    *argv: str,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    check: bool = False,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """`python -m worker ARGV...` run to its end, its output captured as text; `env` on top of
    this process's environment. `check`: a non-zero exit raises."""
    return subprocess.run(
        [sys.executable, "-m", "worker", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=check,
    )


def cli_json(*argv: str, env: dict[str, str] | None = None) -> Any:
    """What `python -m worker ARGV...` printed, as JSON; the command must succeed."""
    result = run_cli(*argv, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_for(
    condition: Callable[[], T], timeout: float = 60.0, interval: float = 0.05, what: str = ""
) -> T:
    """Polls `condition` until it returns something truthy; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(interval)


class WorkerProcess:
    """`embed-worker run` in a subprocess, logging JSON to a file the test can read."""

    def __init__(
        self,
        dsn: str,
        env: dict[str, str],
        *args: str,
        http: bool = True,
        cwd: Path | None = None,
    ) -> None:
        self.port = free_port() if http else None
        self.log_path = Path(tempfile.mkstemp(prefix="embed-worker-", suffix=".log")[1])
        full_env = {**os.environ, "DATABASE_URL": dsn, "EMBED_LOG_FORMAT": "json", **env}
        if self.port is not None:
            full_env["EMBED_HTTP_PORT"] = str(self.port)
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker", "run", *args],
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.read()

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"worker exited early ({self.proc.returncode}):\n{self.log_text()}"
                )
            try:
                return self.get("/readyz")[0] == 200
            except OSError:
                return False

        wait_for(ready, timeout, what="the worker to be ready")

    def signal(self, signum: signal.Signals = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(
                f"worker did not exit within {timeout} s:\n{self.log_text()[-3000:]}"
            ) from None

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                records.append({"message": line})
        return records

    def rows_written(self) -> int:
        return sum(
            r.get("embedded", 0)
            for r in self.log_records()
            if r.get("message", "").startswith("batch ")
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()
        self.log_path.unlink(missing_ok=True)
