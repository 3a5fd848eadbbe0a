"""The `embed-worker` command line."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    raise SystemExit("embed-worker: not implemented yet")
