"""scripts/apt-install.sh on a shared machine: it asks apt to wait for a lock another apt or
dpkg holds (apt's own DPkg::Lock::Timeout), instead of failing at once (issue 37)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "apt-install.sh"


@pytest.mark.skipif(os.geteuid() != 0, reason="the script uses sudo -n when not root")
def test_every_apt_call_waits_for_the_lock(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    fake = tmp_path / "apt-get"
    # The first install fails (lists out of date), so the update and the second install run too.
    fake.write_text(
        f'#!/bin/sh\necho "$*" >> {calls}\n'
        f'[ "$(grep -c install {calls})" -ge 2 ] || [ "$*" = "${{*%install*}}" ]\n'
    )
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "APT_LOCK_TIMEOUT": "7"}

    subprocess.run([str(SCRIPT), "somepackage"], env=env, check=True, capture_output=True)

    lines = calls.read_text().splitlines()
    assert [line.split()[2] for line in lines] == ["install", "update", "install"]
    assert all(line.startswith("-o DPkg::Lock::Timeout=7 ") for line in lines)
