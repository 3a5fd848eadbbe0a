"""The exit codes of `embed-worker`, in one place: docs/cli.md lists them."""

from __future__ import annotations

import signal

OK = 0
FAILURE = 1  # at run time: the database, a model, a failed check
USAGE = 2  # bad usage or configuration, with a message naming the option or variable
# `run --once` drained what it could, but left jobs it could not serve (held: a model it cannot
# load, a column that does not fit, a provider down; or a target with a problem), said on stderr
UNSERVED = 3


def interrupted(by: signal.Signals) -> int:
    """A one-shot run stopped by a signal before it finished: 128 + its number, as shells
    report it (130 for Ctrl-C, 143 for SIGTERM)."""
    return 128 + by.value
