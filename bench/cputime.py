"""CPU time from /proc, for the benches that report what a piece of work cost beside how fast it
went (oltp.py, idle.py, bounded_waits.py, search.py): on a shared machine the rate moves with
the neighbours' load, the CPU a unit of work takes much less."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psycopg

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int | str) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (state first)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def process_seconds(pid: int) -> float:
    """User + system CPU seconds of one process, all its threads (0 for one that is gone)."""
    try:
        fields = _stat(pid)
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def postmaster(conn: psycopg.Connection[Any]) -> int | None:
    """The pid of the server `conn` is connected to, None when it runs on another machine (or
    in a namespace this one cannot see)."""
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    try:
        return int(_stat(row[0] if row else 0)[1])
    except OSError:
        return None


def server_seconds(postmaster: int | None) -> float | None:
    """CPU seconds the server has used: the postmaster, its exited children, its live ones
    (backends come and go). None when the server is not on this machine."""
    if postmaster is None:
        return None
    try:
        total = sum(int(x) for x in _stat(postmaster)[11:15])
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = _stat(entry.name)
                except OSError:
                    continue
                if int(fields[1]) == postmaster:
                    total += int(fields[11]) + int(fields[12])
    except OSError:
        return None
    return total / TICKS
