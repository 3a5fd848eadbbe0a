"""A throwaway PostgreSQL cluster for the test session, and databases cloned from a template.

The cluster lives in a temporary directory on a free port (scripts/pgcluster.sh, the same
script `make db` uses), so it never collides with a running `make db`. Set TEST_DATABASE_URL
to run the suite against an existing server instead (its user must be allowed to create
databases).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

REPO = Path(__file__).resolve().parents[2]
PGCLUSTER = REPO / "scripts" / "pgcluster.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """Where the test server is; `admin_dsn` connects to its maintenance database."""

    admin_dsn: str
    directory: Path | None = None  # None: an external server we must not stop

    def dsn(self, dbname: str) -> str:
        return make_conninfo(self.admin_dsn, dbname=dbname)

    def create_database(self, template: str | None = None, prefix: str = "test") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template:
                query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(template))
            conn.execute(query)
        return name

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    @property
    def port(self) -> int:
        return int(conninfo_to_dict(self.admin_dsn).get("port") or 5432)

    def stop(self) -> None:
        assert self.directory is not None, "cannot stop an external server"
        subprocess.run([str(PGCLUSTER), "stop", str(self.directory)], check=True)

    def start(self) -> None:
        assert self.directory is not None, "cannot start an external server"
        subprocess.run(
            [str(PGCLUSTER), "start", str(self.directory), str(self.port), "postgres", "--fast"],
            check=True,
            stdout=subprocess.DEVNULL,
        )


@contextlib.contextmanager
def session_cluster(
    *, fast: bool = True, external_env: str = "TEST_DATABASE_URL"
) -> Iterator[Cluster]:
    """A cluster for the session: tests run with fsync off (`fast`); benchmarks keep the
    durable defaults so that write costs are real."""
    external = os.environ.get(external_env)
    if external:
        yield Cluster(admin_dsn=external)
        return
    directory = Path(tempfile.mkdtemp(prefix="embed-worker-test-"))
    port = free_port()
    result = subprocess.run(
        [
            str(PGCLUSTER),
            "start",
            str(directory),
            str(port),
            "postgres",
            *(["--fast"] if fast else []),
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"could not start the test cluster:\n{result.stderr}")
    url = result.stdout.strip().splitlines()[-1].removeprefix("DATABASE_URL=")
    try:
        found = Cluster(admin_dsn=url, directory=directory)
        if fast:
            _test_settings(found)
        yield found
    finally:
        subprocess.run([str(PGCLUSTER), "stop", str(directory)], check=False)
        shutil.rmtree(directory, ignore_errors=True)


# What the suite needs beyond a default server: logical replication between two databases of the
# cluster (wal_level), and two-phase commit (applications using XA/JTA prepare their
# transactions; Postgres allows none by default).
TEST_SETTINGS = {"wal_level": "logical", "max_prepared_transactions": "16"}


def _test_settings(cluster: Cluster) -> None:
    """TEST_SETTINGS, with one restart when the server does not have them yet."""
    with psycopg.connect(cluster.admin_dsn, autocommit=True) as conn:
        missing = {}
        for name, value in TEST_SETTINGS.items():
            row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
            if row is None or row[0] != value:
                missing[name] = value
        if not missing:
            return
        for name, value in missing.items():
            conn.execute(
                sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value))
            )
    cluster.stop()
    cluster.start()
