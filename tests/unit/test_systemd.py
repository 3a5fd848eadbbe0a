"""sd_notify: the datagrams systemd would receive, on a real Unix socket."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.process import systemd


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


def test_ready_with_a_one_line_status(notify_socket: socket.socket) -> None:
    assert systemd.notify(ready=True, status="serving\nqueue  jobs")
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=serving queue jobs"


def test_stopping(notify_socket: socket.socket) -> None:
    assert systemd.notify(stopping=True)
    assert notify_socket.recv(4096) == b"STOPPING=1"


def test_abstract_socket_names(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"embed-worker-test-{id(monkeypatch)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.notify(status="hello")
        assert sock.recv(4096) == b"STATUS=hello"


def test_outside_systemd_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not systemd.notify(ready=True)


def test_a_socket_that_is_gone_is_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert not systemd.notify(ready=True)
