"""A released version's code beside today's: the rolling-upgrade tests run its worker and its
`migrate` against the same database as today's.

The release's source comes from this checkout's git history (its tag, or the commit the tag
marks when the clone has no tags), unpacked once per test session. It runs on this virtual
environment's Python and libraries: each release's dependencies are a subset of today's
(tests/acceptance/test_rolling_upgrade.py checks it), so nothing is downloaded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tomllib
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from tests.support.cluster import REPO

# The commit each release's tag marks: the tag when the clone has it, else this commit.
RELEASES = {
    "0.2.0": "aa9dc0790ac6b59a92de6072069b353447d8514f",
    "0.3.0": "d6b55f5250b15425ff9f26db4528d848c0959359",
}


class ReleaseUnavailable(Exception):
    """This checkout cannot produce the release's source (no git history here)."""


@dataclass(frozen=True)
class Release:
    """A released version's source tree, unpacked in `root`."""

    version: str
    root: Path

    def env(self) -> dict[str, str]:
        """The environment that makes `python -m worker` this release's worker: its source
        first on the path (the process also runs in `root`, which `-m` puts first)."""
        return {**os.environ, "PYTHONPATH": str(self.root)}

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "worker", *args]

    def run(self, *args: str, dsn: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`embed-worker ARGS` of this release, to completion."""
        return subprocess.run(
            self.command(*args),
            cwd=self.root,
            env={**self.env(), "DATABASE_URL": dsn},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def dependencies(self) -> list[str]:
        with (self.root / "pyproject.toml").open("rb") as f:
            return list(tomllib.load(f)["project"]["dependencies"])


def _git(*args: str) -> bytes:
    return subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, check=True, timeout=60
    ).stdout


def _ref(version: str) -> str:
    tag = f"v{version}"
    try:
        _git("rev-parse", "--verify", "--quiet", f"refs/tags/{tag}^{{commit}}")
        return tag
    except subprocess.CalledProcessError:
        return RELEASES[version]


def unpack(version: str, into: Path) -> Release:
    """Release `version`'s source tree unpacked under `into` (git archive of its tag)."""
    if not (REPO / ".git").exists():
        raise ReleaseUnavailable(f"{REPO} is not a git checkout: release {version}'s source")
    try:
        archive = _git("archive", "--format=tar", _ref(version))
    except subprocess.CalledProcessError as exc:
        raise ReleaseUnavailable(
            f"release {version} is not in this clone's history: {exc.stderr.decode().strip()}"
        ) from None
    root = into / f"embed-worker-{version}"
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(root, filter="data")
    return Release(version, root)
