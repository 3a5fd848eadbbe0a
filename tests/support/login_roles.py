"""A throwaway login role for a test: roles are the cluster's, not the database's, so each takes
a name no other test takes, and is dropped with what it was granted afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo


@contextmanager
def login_role(conn: psycopg.Connection[Any], dsn: str, prefix: str, *grants: str) -> Iterator[str]:
    """A LOGIN role named `prefix`_<random>, granted each of `grants` ("SELECT ON docs",
    "pg_monitor"); yields `dsn` as that role."""
    role = f"{prefix}_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {role} LOGIN")
    for grant in grants:
        conn.execute(f"GRANT {grant} TO {role}")
    yield make_conninfo(dsn, user=role)
    conn.execute(f"DROP OWNED BY {role}")
    conn.execute(f"DROP ROLE {role}")
