"""Remote models and rerankers that tests make against the stand-in servers: the key they send,
and closing them (their exchange's threads and connections) when the test ends (tests/unit's
conftest.py does, after every test)."""

from __future__ import annotations

from typing import Any, TypeVar

from worker.models.remote.keys import ApiKey
from worker.models.remote.remote_client import RemoteClient
from worker.secret import Secret

C = TypeVar("C", bound=RemoteClient[Any])

_open: list[RemoteClient[Any]] = []


def api_key(key: str | None) -> ApiKey:
    """The key `key` (None: none), as read from a variable named TEST_KEY."""
    return lambda _: (Secret(key) if key else None, "TEST_KEY")


def closed_after_test(client: C) -> C:
    _open.append(client)
    return client


def close_all() -> None:
    while _open:
        _open.pop().close()
