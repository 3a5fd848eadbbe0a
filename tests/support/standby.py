"""A primary cluster of its own and a streaming standby of it (pg_basebackup -R), for the tests
that need a real hot standby: the test cluster's own would copy every test's database."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import make_conninfo

from tests.support.cluster import PGCLUSTER, free_port

DATABASE = "app"


@dataclass(frozen=True)
class Pair:
    primary: str  # DATABASE_URL of `app` on the primary
    standby: str  # ... and on its standby


def _as_owner(*argv: str) -> list[str]:
    """As the OS user the clusters belong to (pgcluster.sh: `postgres` when we are root)."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else list(argv)


@contextmanager
def primary_and_standby() -> Iterator[Pair]:
    primary_dir = Path(tempfile.mkdtemp(prefix="embed-worker-primary-"))
    # Made by the postgres user itself when we are root: pg_basebackup wants an empty directory
    # it can write, and the user may not enter one of ours.
    standby_data = Path(tempfile.mkdtemp(prefix="embed-worker-standby-")) / "data"
    if os.geteuid() == 0:
        shutil.chown(standby_data.parent, "postgres")
    port, standby_port = free_port(), free_port()
    bin_dir = _pg_bin()
    try:
        started = subprocess.run(
            [str(PGCLUSTER), "start", str(primary_dir), str(port), DATABASE, "--fast"],
            capture_output=True,
            text=True,
            check=True,
        )
        primary = started.stdout.strip().splitlines()[-1].removeprefix("DATABASE_URL=")
        # (-c fast: a spread checkpoint would hold the copy for a minute or more)
        backup = [f"{bin_dir}/pg_basebackup", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]
        backup += ["-D", str(standby_data), "-R", "-X", "stream", "-c", "fast"]
        subprocess.run(_as_owner(*backup), check=True, capture_output=True, cwd="/")
        start = [f"{bin_dir}/pg_ctl", "-D", str(standby_data), "-l", str(standby_data / "log")]
        start += ["-o", f"-p {standby_port}", "-w", "-t", "60", "start"]
        subprocess.run(_as_owner(*start), check=True, capture_output=True, cwd="/")
        yield Pair(primary, make_conninfo(primary, port=str(standby_port)))
    finally:
        subprocess.run(
            _as_owner(f"{bin_dir}/pg_ctl", "-D", str(standby_data), "-m", "immediate", "stop"),
            capture_output=True,
            cwd="/",
        )
        subprocess.run([str(PGCLUSTER), "destroy", str(primary_dir)], capture_output=True)
        shutil.rmtree(primary_dir, ignore_errors=True)
        shutil.rmtree(standby_data.parent, ignore_errors=True)


def _pg_bin() -> str:
    major = sorted(os.listdir("/usr/lib/postgresql"), key=int)[-1]
    return f"/usr/lib/postgresql/{major}/bin"
