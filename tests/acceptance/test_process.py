"""The real process: idle wake-up, SIGTERM and a second signal, concurrent workers, --once."""

from __future__ import annotations

import os
import pty
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.jobs import JOBS
from tests.support.process import WorkerProcess, wait_for

Conn = psycopg.Connection[Any]


def make_docs(conn: Conn, rows: int) -> None:
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text)")
    conn.execute("SELECT embeddings.watch('docs', 'body', model => 'all-MiniLM-L6-v2')")
    if rows:
        conn.execute(
            "INSERT INTO docs SELECT g, 'document ' || g || ': ' || repeat('words about topic ' || (g %% 17) || ' ', 1 + g %% 9)"
            " FROM generate_series(1, %s) g",
            (rows,),
        )


def embedded(conn: Conn) -> int:
    row = conn.execute("SELECT count(embedding) FROM docs").fetchone()
    assert row is not None
    return int(row[0])


def queue_empty(conn: Conn) -> bool:
    return conn.execute(f"SELECT count(*) FROM {JOBS}").fetchone() == (0,)


def test_an_idle_worker_embeds_a_new_row(
    conn: Conn, start_worker: Callable[..., WorkerProcess]
) -> None:
    make_docs(conn, 0)
    worker = start_worker(EMBED_POLL_SECONDS=60)  # a poll would be too late: the NOTIFY wakes it
    worker.wait_ready()
    conn.execute("INSERT INTO docs VALUES (1, 'hello there')")
    wait_for(lambda: embedded(conn) == 1, timeout=20, what="the row to be embedded")
    worker.signal(signal.SIGTERM)
    assert worker.wait_exit(30) == 0


def test_systemd_hears_ready_and_stopping(
    conn: Conn, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    """Under `Type=notify`, systemd learns from the process when it is ready and stopping."""
    make_docs(conn, 0)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify_socket:
        notify_socket.bind(str(tmp_path / "notify"))
        notify_socket.settimeout(60)
        worker = start_worker(NOTIFY_SOCKET=str(tmp_path / "notify"), http=False)
        received = [notify_socket.recv(4096).decode()]
        while "READY=1" not in received[-1]:
            received.append(notify_socket.recv(4096).decode())
        assert received[0].startswith("STATUS=connecting to "), received
        assert "STATUS=serving queue embedding_jobs with all-MiniLM-L6-v2" in received[-1]
        worker.signal(signal.SIGTERM)
        assert notify_socket.recv(4096).decode().startswith("STOPPING=1\nSTATUS=stopping")
        assert worker.wait_exit(30) == 0


def test_sigterm_mid_drain_exits_0_and_loses_nothing(
    conn: Conn,
    worker_dsn: str,
    start_worker: Callable[..., WorkerProcess],
    worker_env: dict[str, str],
) -> None:
    make_docs(conn, 3000)
    worker = start_worker()
    wait_for(lambda: embedded(conn) >= 100, timeout=60, what="the drain to start")
    worker.signal(signal.SIGTERM)
    assert worker.wait_exit(30) == 0
    done = embedded(conn)
    assert 100 <= done < 3000
    assert any("stopping (SIGTERM)" in r.get("message", "") for r in worker.log_records())

    rest = subprocess.run(
        [sys.executable, "-m", "worker", "run", "--once"],
        env={**os.environ, **worker_env, "DATABASE_URL": worker_dsn},
        capture_output=True,
        timeout=300,
    )
    assert rest.returncode == 0, rest.stderr.decode()[-2000:]
    assert embedded(conn) == 3000
    assert queue_empty(conn)
    assert conn.execute("SELECT count(*) FROM embeddings.failures").fetchone() == (0,)


def test_ctrl_c_of_run_once_before_the_queue_drains_exits_130(
    conn: Conn, start_worker: Callable[..., WorkerProcess]
) -> None:
    """`run --once` means "until the queue is drained": stopped before that by Ctrl-C, it
    says so with 130 (128 + SIGINT), as shells expect, so a script does not go on as if the
    work were done. What it embedded stays; the rest is waiting in the queue."""
    make_docs(conn, 3000)
    worker = start_worker("--once", http=False)
    wait_for(lambda: embedded(conn) >= 32, timeout=60, what="the drain to start")
    worker.signal(signal.SIGINT)
    assert worker.wait_exit(30) == 130
    assert not queue_empty(conn)


def test_a_second_signal_exits_at_once_and_hands_jobs_back(
    conn: Conn, start_worker: Callable[..., WorkerProcess]
) -> None:
    make_docs(conn, 3000)
    worker = start_worker(EMBED_GRACE_SECONDS=120, EMBED_VT_SECONDS=300)
    wait_for(lambda: embedded(conn) >= 32, timeout=60, what="the drain to start")
    worker.signal(signal.SIGTERM)
    worker.signal(signal.SIGINT)
    started = time.monotonic()
    assert worker.wait_exit(30) == 0
    assert time.monotonic() - started < 10
    # Jobs it held are visible again now, not after the 300 s lease.
    wait_for(
        lambda: (
            conn.execute(
                f"SELECT count(*) FROM {JOBS} WHERE vt > now() + interval '60 seconds'"
            ).fetchone()
            == (0,)
        ),
        timeout=10,
        what="leases to be handed back",
    )


def test_two_workers_drain_one_queue_each_row_once(
    conn: Conn, start_worker: Callable[..., WorkerProcess]
) -> None:
    make_docs(conn, 1000)
    workers = [start_worker(http=False), start_worker(http=False)]
    wait_for(lambda: queue_empty(conn) and embedded(conn) == 1000, timeout=240, what="the drain")
    for worker in workers:
        worker.signal(signal.SIGTERM)
        assert worker.wait_exit(30) == 0
    written = [w.rows_written() for w in workers]
    assert sum(written) == 1000, written  # no row embedded twice (leases never expired here)
    assert all(n > 0 for n in written), written  # both took part


def test_run_once_exits_0_on_an_empty_queue(
    conn: Conn, start_worker: Callable[..., WorkerProcess]
) -> None:
    make_docs(conn, 0)
    worker = start_worker("--once", http=False)
    assert worker.wait_exit(60) == 0


@pytest.mark.parametrize("args", [["--batch-size", "0"], ["--queue", "No-Such"]])
def test_bad_configuration_exits_2_with_the_variable_named(args: list[str], dsn: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "worker", "run", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DATABASE_URL": dsn},
    )
    assert result.returncode == 2
    assert "EMBED_BATCH_SIZE" in result.stderr or "EMBED_QUEUE" in result.stderr


@pytest.mark.parametrize(
    ("host", "code", "variable"),
    [
        ("127.0.0.1", 1, "EMBED_HTTP_PORT"),  # the port taken below: the machine's, for now
        ("not.a.host", 2, "EMBED_HTTP_HOST"),  # no such name: the configuration's
        ("192.0.2.1", 2, "EMBED_HTTP_HOST"),  # (TEST-NET-1) not an address of this machine
    ],
)
def test_an_address_it_cannot_listen_on_is_one_line_naming_it(
    host: str, code: int, variable: str, dsn: str
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "worker", "run"],
            capture_output=True,
            text=True,
            timeout=60,
            env={
                **os.environ,
                "DATABASE_URL": dsn,
                "EMBED_HTTP_HOST": host,
                "EMBED_HTTP_PORT": str(port),
            },
        )
    assert result.returncode == code, result.stderr
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"{variable}: cannot listen on {host}:{port}" in errors[0], result.stderr


def test_no_password_reaches_the_output(worker_env: dict[str, str]) -> None:
    """A failing connection's error names where, never the password."""
    secret = "Sup3r-s3cret-pw"
    url = f"postgresql://app:{secret}@127.0.0.1:1/nowhere"
    for args in (["status"], ["migrate"], ["run", "--once"]):
        result = subprocess.run(
            [sys.executable, "-m", "worker", *args],
            env={**os.environ, **worker_env, "DATABASE_URL": url, "EMBED_LOG_FORMAT": "json"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1, (args, result.stderr)
        assert "127.0.0.1:1/nowhere" in result.stderr
        assert secret not in result.stdout + result.stderr, args


def test_a_long_run_once_on_a_terminal_shows_progress(
    conn: Conn, worker_dsn: str, worker_env: dict[str, str]
) -> None:
    make_docs(conn, 300)
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "worker", "run", "--once", "--batch-size", "64"],
        env={**os.environ, **worker_env, "DATABASE_URL": worker_dsn},
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    screen = b""
    while True:  # until the process closes its end of the terminal
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: no writer left
            break
        if not chunk:
            break
        screen += chunk
    os.close(controller)
    assert process.wait(60) == 0
    text = screen.decode()
    assert "pending · ETA" in text
    assert re.search(r"\r\x1b\[Kembedded 300 rows in [\d.]+ s \([\d,.]+ rows/s\)\r?\n", text)
    # Every log line starts on a line of its own, never glued to the progress line.
    for match in re.finditer(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR)", text):
        before = text[max(match.start() - 4, 0) : match.start()]
        assert before.endswith(("\n", "\r\x1b[K")) or match.start() == 0, repr(before)
    assert embedded(conn) == 300


def test_a_second_worker_that_would_oversubscribe_the_cores_says_so(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """Two workers, each on every core (EMBED_THREADS's default): the second one to start
    warns, naming the setting and the value that fits (issue 37: three workers of two threads
    on two cores said nothing)."""
    every_core = str(len(os.sched_getaffinity(0)))
    first = start_worker(EMBED_THREADS=every_core)
    first.wait_ready()
    second = start_worker(EMBED_THREADS=every_core)
    second.wait_ready()

    def warned() -> dict[str, Any] | None:
        return next(
            (
                r
                for r in second.log_records()
                if "embed-worker processes run on this machine" in r["message"]
            ),
            None,
        )

    record = wait_for(warned, timeout=10, what="the second worker's warning")
    assert record is not None
    assert record["level"] == "warning"
    # (on one core, a worker of one thread can lower nothing: it is told to run fewer)
    assert re.search(r"set EMBED_THREADS=\d+ on each|run 1 or fewer here", record["message"])
