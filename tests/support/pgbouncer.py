"""A real PgBouncer in transaction mode in front of the test cluster (Debian's `pgbouncer`).

PgBouncer refuses to run as root: as root it runs as the OS user that owns the test cluster
(`postgres`), from a directory of its own. `auth_type = trust` still wants every user name in
the auth file, so the caller names the roles that will connect.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.cluster import free_port
from tests.support.process import wait_for

BINARY = "pgbouncer"


def available() -> str | None:
    """Why PgBouncer cannot run here, or None."""
    if shutil.which(BINARY) is None:
        return "pgbouncer is not installed (make test-deps installs Debian's pgbouncer)"
    return None


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def transaction_pooler(
    server_port: int,
    users: Iterable[str],
    *,
    pool_size: int = 1,
    mode: str = "transaction",
    query_wait_timeout: int = 120,
    round_robin: bool = False,
) -> Iterator[int]:
    """Runs PgBouncer with `pool_mode = transaction` (or `mode`) and `pool_size` server
    connections per database and user; yields the port it listens on. One server connection
    (the default) makes every client of a user share it, so any session state one of them
    leaves behind is visible to the next. `query_wait_timeout`: PgBouncer's (its default), the
    seconds a client's query waits for a server connection before the client is dropped.
    `round_robin`: PgBouncer's `server_round_robin`, idle server connections handed out oldest
    first (its default: the one freed last), so a client's consecutive transactions go round
    the pool."""
    directory = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    port = free_port()
    (directory / "userlist.txt").write_text("".join(f'"{u}" ""\n' for u in users))
    config = directory / "pgbouncer.ini"
    config.write_text(
        f"""[databases]
* = host=127.0.0.1 port={server_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {directory / "userlist.txt"}
pool_mode = {mode}
default_pool_size = {pool_size}
query_wait_timeout = {query_wait_timeout}
max_client_conn = 200
server_round_robin = {int(round_robin)}
admin_users = postgres
logfile = {directory / "pgbouncer.log"}
pidfile = {directory / "pgbouncer.pid"}
"""
    )
    command = [BINARY, str(config)]
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres")
        for path in directory.iterdir():
            shutil.chown(path, "postgres")
        command = ["runuser", "-u", "postgres", "--", *command]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd="/")
    try:
        wait_for(
            lambda: process.poll() is not None or _listening(port),
            timeout=10,
            what="pgbouncer to listen",
        )
        if process.poll() is not None:
            raise RuntimeError(
                f"pgbouncer exited: {process.stderr.read() if process.stderr else ''!r}"
            )
        yield port
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        if process.stderr is not None:
            process.stderr.close()
        shutil.rmtree(directory, ignore_errors=True)
