"""Commands to suggest in messages, spelled so that they work when pasted as printed.

A user who ran `make demo` has no `embed-worker` on PATH and no DATABASE_URL in the shell: a
hint names the executable by its full path (unless PATH finds this very one) and carries the
database it talked to (password redacted).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from worker import db


def executable() -> str:
    """How to run this embed-worker from any shell."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    on_path = shutil.which("embed-worker")
    if script is not None and script.name == "embed-worker":
        if on_path and Path(on_path).resolve() == script.resolve():
            return "embed-worker"
        return shlex.quote(str(script.resolve()))
    beside = Path(sys.executable).with_name("embed-worker")  # the venv's console script
    if beside.is_file() and os.access(beside, os.X_OK):
        if on_path and Path(on_path).resolve() == beside.resolve():
            return "embed-worker"
        return shlex.quote(str(beside))
    return f"{shlex.quote(sys.executable)} -m worker"


def command(arguments: str, dsn: str | None, env: Mapping[str, str] | None = None) -> str:
    """`embed-worker ARGUMENTS`, runnable as printed, for the database `dsn` ("" = PG* vars),
    with the settings `env` (what the command needs of this process's configuration, e.g. the
    directory a model was found in) set in front of it."""
    prefix = ""
    if dsn:  # even when DATABASE_URL is set here: `make` may have set it, not the user's shell
        prefix = f"DATABASE_URL={shlex.quote(db.redact(dsn))} "
    for name, value in (env or {}).items():
        prefix += f"{name}={shlex.quote(value)} "
    return f"{prefix}{executable()} {arguments}"
