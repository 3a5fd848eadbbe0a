"""A Docker engine for the image tests, and stand-ins for the registry images we cannot pull.

The tests start their own `dockerd` (Debian's docker.io; there is no systemd to start one) with
its data under /var/tmp, so base images survive between runs, and stop it afterwards. Registry
images are not reachable, so the base image is built here: Debian bookworm from `debootstrap
--variant=minbase`, imported with `docker import`, plus Debian's python3 and the host's CA bundle
(pip reaches the package index only through it), standing in for python:3.11-slim-bookworm.
Builds and runs use the host's network.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path("/var/tmp/embed-worker-test-docker")
SOCKET = f"unix://{ROOT}/docker.sock"
MINBASE = "embed-worker-test/bookworm-minbase:1"
PYTHON = "embed-worker-test/python:bookworm-1"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

PYTHON_DOCKERFILE = f"""\
FROM {MINBASE}
RUN apt-get update -qq \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \\
        python3 python3-venv ca-certificates >/dev/null \\
    && rm -rf /var/lib/apt/lists/*
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt
"""


class Docker:
    def __init__(self, client: str) -> None:
        self.client = client

    def run(
        self, *args: str, check: bool = True, timeout: float = 900, input: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.client, "--host", SOCKET, *args],
            capture_output=True,
            text=input is None,
            input=input,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args[:3])} exited {result.returncode}:\n"
                f"{result.stdout!s}\n{result.stderr!s}"[-4000:]
            )
        return result

    def answers(self) -> bool:
        return self.run("info", check=False, timeout=20).returncode == 0

    def has_image(self, tag: str) -> bool:
        return self.run("image", "inspect", tag, check=False).returncode == 0


def _client() -> str | None:
    # Debian's client first: it matches Debian's daemon.
    for candidate in ("/usr/bin/docker", shutil.which("docker")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@contextlib.contextmanager
def engine() -> Iterator[Docker]:
    """A running dockerd of our own (skips the test with the reason when it cannot start)."""
    dockerd, client = shutil.which("dockerd"), _client()
    if dockerd is None or client is None:
        pytest.skip("dockerd not installed (Debian package docker.io; `make test` installs it)")
    if os.geteuid() != 0:
        pytest.skip("starting dockerd needs root (CI runs as root)")
    docker = Docker(client)
    if docker.answers():  # ours, from a run that is still going on
        yield docker
        return
    ROOT.mkdir(parents=True, exist_ok=True)
    log_path = ROOT / "dockerd.log"
    with log_path.open("wb") as log:
        daemon = subprocess.Popen(
            [
                dockerd,
                f"--data-root={ROOT / 'data'}",
                f"--exec-root={ROOT / 'exec'}",
                f"--pidfile={ROOT / 'dockerd.pid'}",
                f"--host={SOCKET}",
                # Builds and containers use the host's network: no bridge, no iptables rules.
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while not docker.answers():
            if daemon.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-1500:]
                pytest.skip(f"dockerd could not start here:\n{tail}")
            time.sleep(0.5)
        yield docker
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(60)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(10)
        _unmount_leftovers()


def _unmount_leftovers() -> None:
    """dockerd leaves its network namespace bind-mounted under its exec root."""
    mounts = Path("/proc/mounts").read_text().splitlines()
    for point in (line.split()[1] for line in mounts):
        if point.startswith(f"{ROOT}/"):
            subprocess.run(["umount", point], check=False, capture_output=True)


def python_base(docker: Docker) -> str:
    """The stand-in for python:3.11-slim-bookworm, built once and kept."""
    if not docker.has_image(MINBASE):
        debootstrap = shutil.which("debootstrap")
        if debootstrap is None:
            pytest.skip("debootstrap not installed (Debian package; `make test` installs it)")
        with tempfile.TemporaryDirectory(prefix="embed-worker-rootfs-") as rootfs:
            made = subprocess.run(
                [
                    debootstrap,
                    "--variant=minbase",
                    "bookworm",
                    rootfs,
                    "http://deb.debian.org/debian",
                ],
                capture_output=True,
                text=True,
                timeout=1200,
                check=False,
            )
            if made.returncode != 0:
                pytest.skip(f"debootstrap could not build a base image:\n{made.stdout[-1500:]}")
            archive = subprocess.run(
                ["tar", "-C", rootfs, "-c", "."], capture_output=True, check=True
            ).stdout
            docker.run("import", "-", MINBASE, input=archive)
    if not docker.has_image(PYTHON):
        with tempfile.TemporaryDirectory(prefix="embed-worker-python-") as context:
            (Path(context) / "Dockerfile").write_text(PYTHON_DOCKERFILE)
            shutil.copyfile(HOST_CA_BUNDLE, Path(context) / "ca-certificates.crt")
            docker.run("build", "--network", "host", "-t", PYTHON, context)
    return PYTHON
