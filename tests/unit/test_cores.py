"""Whether the workers of a machine oversubscribe its cores (worker/process/cores.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.process import cores


@pytest.mark.parametrize(
    ("argv", "worker"),
    [
        (["/opt/embed-worker/bin/python3", "/opt/embed-worker/bin/embed-worker", "run"], True),
        (["/usr/local/bin/embed-worker", "--log-format", "json", "run", "--once"], True),
        (["python", "-m", "worker", "run", "--no-pull"], True),
        (["/usr/local/bin/embed-worker", "status", "--watch"], False),
        (["python", "-m", "worker", "search", "docs", "run"], False),
        (["python", "-m", "pytest", "-k", "run"], False),
        (["python3", "-X", "importtime", "-u", "-m", "worker", "run"], True),
        (["/usr/bin/python3.11", "-I", "/usr/local/bin/embed-worker", "run"], True),
        # Launchers: their child is the worker (counting both made one worker two).
        (["sudo", "-u", "embed", "/usr/local/bin/embed-worker", "run"], False),
        (["timeout", "60", ".venv/bin/python", "-m", "worker", "run", "--once"], False),
        (["uv", "run", "embed-worker", "run"], False),
        (["python3", "wrapper.py", "-m", "worker", "run"], False),
        (["vim", "embed-worker.env"], False),
        ([], False),
    ],
)
def test_a_worker_is_an_embed_worker_run_command(argv: list[str], worker: bool) -> None:
    assert cores.is_worker_command(argv) is worker


def test_workers_are_counted_from_the_process_table(tmp_path: Path) -> None:
    for pid, argv in {
        "11": [b"/usr/local/bin/embed-worker", b"run"],
        "12": [b"python3", b"-m", b"worker", b"run", b"--once"],
        "13": [b"/usr/local/bin/embed-worker", b"status"],
        "14": [b"postgres: checkpointer"],
    }.items():
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "cmdline").write_bytes(b"\0".join(argv) + b"\0")
    (tmp_path / "15").mkdir()  # a process gone between the listing and the read
    (tmp_path / "self").mkdir()
    argvs = list(cores.command_lines(tmp_path))
    assert sum(cores.is_worker_command(a) for a in argvs) == 2 and len(argvs) == 4


def test_workers_that_fit_the_cores_get_no_warning() -> None:
    assert cores.oversubscription(threads=2, cores=2, workers=1) is None
    assert cores.oversubscription(threads=1, cores=4, workers=4) is None


def test_three_workers_of_two_threads_on_two_cores_are_told_what_to_set() -> None:
    told = cores.oversubscription(threads=2, cores=2, workers=3)
    assert told is not None
    assert "3 embed-worker processes" in told and "6 threads on 2 cores" in told
    assert "EMBED_THREADS=1" in told


def test_one_worker_with_more_threads_than_cores_is_told() -> None:
    told = cores.oversubscription(threads=8, cores=2, workers=1)
    assert told is not None and "EMBED_THREADS=8" in told and "EMBED_THREADS=2 or fewer" in told


def test_a_worker_on_one_thread_is_not_told_to_set_one_thread() -> None:
    """QA 5b, nit 9: three workers of EMBED_THREADS=1 on two cores were told "this one embeds
    on 1 threads ... set EMBED_THREADS=1 on each": the setting they had."""
    told = cores.oversubscription(threads=1, cores=2, workers=3)
    assert told is not None
    assert "EMBED_THREADS" not in told and "1 threads" not in told
    assert "3 embed-worker processes" in told and "run 2 or fewer here" in told
    single = cores.oversubscription(threads=1, cores=1, workers=2)
    assert single is not None and "on this machine of 1 core:" in single
    two = cores.oversubscription(threads=2, cores=1, workers=2)
    assert two is not None and "4 threads on 1 core," in two and "EMBED_THREADS=1" in two
