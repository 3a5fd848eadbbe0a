"""The quickstart's `make db` from a fresh `git clone` inside a private (0700) directory.

Newcomers clone under /root or into a `mktemp -d` folder. As root the cluster belongs to the OS
user `postgres`, which cannot enter such a directory, so scripts/pgcluster.sh keeps the data
under /var/lib/postgresql and links .devdb/data to it; every path the postgres user opens must
then be the link's target. As a normal user the cluster is the user's own.

The clone is this checkout's HEAD plus its uncommitted changes. It gets a `.venv` that reuses this test run's installed packages (a venv whose .pth
points at ours), so the test exercises `make db` itself, not a second `pip install` of the
project.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support.cluster import REPO, free_port

pytestmark = pytest.mark.slow

TEST_USER = "embed-worker-qs"  # a plain account for the normal-user run (created when root)


def _clone(parent: Path) -> Path:
    checkout = parent / "embed-worker"
    subprocess.run(
        ["git", "clone", "-q", "--no-hardlinks", str(REPO), str(checkout)],
        check=True,
        capture_output=True,
    )
    # Uncommitted changes to tracked files too, so the test checks the code under development.
    diff = subprocess.run(
        ["git", "-C", str(REPO), "diff", "--binary", "HEAD"], check=True, capture_output=True
    ).stdout
    if diff:
        subprocess.run(["git", "-C", str(checkout), "apply"], input=diff, check=True)
    return checkout


def _interpreter(user: str | None) -> str | None:
    """A Python of our version that `user` may run: ours, else the system's."""
    base: str = sys._base_executable  # type: ignore[attr-defined]
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    for candidate in (base, "/usr/bin/python3"):
        probe = [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]
        if user is not None:
            probe = ["runuser", "-u", user, "--", *probe]
        found = subprocess.run(probe, capture_output=True, text=True, check=False)
        if found.returncode == 0 and found.stdout.strip() == version:
            return candidate
    return None


def _give_venv(checkout: Path, interpreter: str) -> None:
    """`.venv` for the clone: an interpreter plus our installed packages, stamped as
    installed so `make db` skips `pip install`."""
    venv = checkout / ".venv"
    subprocess.run([interpreter, "-m", "venv", "--without-pip", str(venv)], check=True)
    ours = sysconfig.get_paths()["purelib"]
    theirs = Path(
        subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (theirs / "ours.pth").write_text(f"{ours}\n")
    (venv / ".installed").touch()  # newer than the clone's pyproject.toml


def _make(
    checkout: Path, target: str, port: int, user: str | None
) -> subprocess.CompletedProcess[str]:
    command = ["make", target, f"DEVDB_PORT={port}"]
    if user is not None:
        command = ["runuser", "-u", user, "--", *command]
    # A newcomer's shell: no database settings, and no make of ours around (`make test` exports
    # MAKEFLAGS and MAKELEVEL, which would make this one print "Entering directory" lines).
    inherited = ("PG", "DATABASE_URL", "MAKE", "MFLAGS")
    env = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
    return subprocess.run(
        command, cwd=checkout, capture_output=True, text=True, env=env, timeout=600
    )


def _quickstart_db(parent: Path, user: str | None) -> None:
    """Clone into `parent` (mode 0700), then `make db` twice (idempotent), connect, stop."""
    interpreter = _interpreter(user)
    if interpreter is None:
        pytest.skip(f"no Python {sys.version_info[:2]} that {user} may run")
    checkout = _clone(parent)
    _give_venv(checkout, interpreter)
    if user is not None:
        subprocess.run(["chown", "-R", f"{user}:", str(parent)], check=True)
    parent.chmod(0o700)
    port = free_port()
    try:
        first = _make(checkout, "db", port, user)
        for attempt, result in ((1, first), (2, _make(checkout, "db", port, user))):
            assert result.returncode == 0, f"make db (run {attempt}) failed:\n{result.stderr}"
            last = result.stdout.strip().splitlines()[-1]
            assert last == f"DATABASE_URL=postgresql://postgres@127.0.0.1:{port}/embed", last
        url = last.removeprefix("DATABASE_URL=")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute("CREATE EXTENSION IF NOT EXISTS pgmq")
            row = conn.execute("SHOW data_directory").fetchone()
        assert row is not None
        data = checkout / ".devdb" / "data"
        where = data.resolve()
        assert Path(row[0]) == where
        if where != data:  # outside the checkout: `make db` said where, once
            assert f"the data is in {where}" in first.stderr, first.stderr
            assert "make clean` deletes it" in first.stderr
            assert (where / "linked-from").read_text().strip() == str(data)
        stop = _make(checkout, "db-stop", port, user)
        assert stop.returncode == 0, stop.stderr
        assert f"its data stays in {where}" in stop.stdout
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(url, connect_timeout=3).close()
        # `make clean` leaves nothing of the cluster behind, wherever its data was.
        clean = _make(checkout, "clean", port, user)
        assert clean.returncode == 0, clean.stderr
        assert not where.exists() and not (checkout / ".devdb").exists()
    finally:
        subprocess.run(
            [str(checkout / "scripts" / "pgcluster.sh"), "destroy", str(checkout / ".devdb")],
            check=False,
            capture_output=True,
        )


@pytest.fixture
def private_dir() -> Iterator[Path]:
    parent = Path(tempfile.mkdtemp(prefix="embed-worker-clone-"))  # mode 0700, like mktemp -d
    yield parent
    shutil.rmtree(parent, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="the root case needs root (CI runs as root)")
def test_make_db_as_root_from_a_clone_in_a_private_directory(private_dir: Path) -> None:
    _quickstart_db(private_dir, user=None)


def _normal_user() -> str | None:
    """None when this process is that user already; else the account (created if missing)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/bin/bash", TEST_USER],
            check=True,
        )
    return TEST_USER


def test_make_db_as_a_normal_user_from_a_clone_in_a_private_directory(private_dir: Path) -> None:
    user = _normal_user()
    if user is not None:
        packages = sysconfig.get_paths()["purelib"]
        readable = subprocess.run(
            ["runuser", "-u", user, "--", "test", "-r", f"{packages}/pgmq/__init__.py"],
            check=False,
        )
        if readable.returncode != 0:
            pytest.skip(f"{user} cannot read the test's packages in {packages}")
    _quickstart_db(private_dir, user=user)
