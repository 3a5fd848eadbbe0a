"""Connection strings: which database a DSN names (DATABASE_URL, else libpq's PG* variables,
else the local `make db` cluster), where it points, and the same text with its password hidden,
for logs, errors and hints."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import psycopg
from psycopg.conninfo import conninfo_to_dict

DEVDB_PORT = 54329
PG_ENV = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE")


def resolve_dsn(
    url: str | None, env: Mapping[str, str] | None = None, *, devdb_port: int = DEVDB_PORT
) -> str:
    """DATABASE_URL when given; else the standard PG* variables (libpq reads them itself, so
    the empty conninfo); else the local `make db` cluster on `devdb_port` (DEVDB_PORT, from the
    Settings: `settings.dsn`). `env` (default: the process environment) is only looked at for
    libpq's own PG* variables."""
    env = os.environ if env is None else env
    if url:
        return url
    if uses_pg_environment(env):
        return ""
    return f"postgresql://postgres@127.0.0.1:{devdb_port}/embed"


def uses_pg_environment(env: Mapping[str, str] | None = None) -> bool:
    """Whether libpq's PG* variables name the database (resolve_dsn without a URL)."""
    env = os.environ if env is None else env
    return any(env.get(name) for name in PG_ENV)


_URL_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]*:)[^@\s]*@")
# A value already redacted (*** then only the quotes that close the text around it) is left as
# it is: a hint redacts its connection string and the log filter redacts the line again, and a
# second pass taking `***'` for a value ate the shell quote that closes it. A quoted value takes
# what follows its closing quote up to a space, so that *** never comes out with more after it.
_KV_PASSWORD = re.compile(
    r"""(password\s*=\s*)(?!\*\*\*['"]*(?:\s|$))('(?:[^'\\]|\\.)*'\S*|\S+)""", re.IGNORECASE
)


def redact(text: str) -> str:
    """`text` with any password in a connection string replaced by ***; idempotent: what it
    returns, it returns unchanged."""
    text = _URL_PASSWORD.sub(r"\1***@", text)
    return _KV_PASSWORD.sub(r"\1***", text)


def describe(dsn: str) -> str:
    """A password-free summary of where `dsn` points, for logs."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<invalid connection string>"
    params.pop("password", None)
    host = params.get("host") or os.environ.get("PGHOST") or "localhost"
    port = params.get("port") or os.environ.get("PGPORT") or "5432"
    db = params.get("dbname") or os.environ.get("PGDATABASE") or params.get("user") or ""
    return f"{host}:{port}/{db}"
