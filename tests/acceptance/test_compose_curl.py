"""docs/operating.md's compose section, as a newcomer runs it (issue 37): the image listens on
0.0.0.0, so POST routes need a token; compose gives the worker one (EMBED_HTTP_TOKEN, a default
that suits one machine, like the database password's) and the documented `curl ... /embed`
sends it. Run here against the real `embed-worker run` with the compose service's settings and
the image's address (no Docker needed), the curl line taken from the doc as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.support.process import WorkerProcess

ROOT = Path(__file__).resolve().parents[2]


def compose_environment(service: str) -> dict[str, str]:
    """The service's environment as compose resolves it in a shell that sets nothing:
    `${NAME:-default}` is the default."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    environment: dict[str, Any] = services[service]["environment"]
    return {
        name: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))
        for name, value in environment.items()
    }


def documented_embed_curl() -> str:
    text = (ROOT / "docs" / "operating.md").read_text()
    found = re.search(r"`(curl -s localhost:8080/embed [^`]+)`", text)
    assert found, "docs/operating.md shows the compose curl of /embed"
    return found.group(1)


def test_the_compose_curl_of_embed_works_as_documented(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    environment = compose_environment("worker")
    assert environment.get("EMBED_HTTP_TOKEN"), "compose gives the worker a token"
    worker = start_worker(
        EMBED_HTTP_HOST="0.0.0.0", EMBED_HTTP_TOKEN=environment["EMBED_HTTP_TOKEN"]
    )
    worker.wait_ready()
    command = documented_embed_curl().replace("localhost:8080", f"127.0.0.1:{worker.port}")
    shell = {k: v for k, v in os.environ.items() if k != "EMBED_HTTP_TOKEN"}  # a new shell

    result = subprocess.run(
        ["bash", "-c", command + " -w '\\n%{http_code}'"],
        capture_output=True,
        text=True,
        env=shell,
        timeout=60,
    )

    body, _, status = result.stdout.rpartition("\n")
    assert status == "200", result.stdout
    assert len(json.loads(body)["embedding"]) == 384
