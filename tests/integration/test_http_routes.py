"""The HTTP side's routes are the ones /metrics names (worker/metrics/serving.py: HTTP_ROUTES): a route
added without its label would be counted as `other`, with the 404s."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Callable

import pytest

from worker import metrics
from worker.config import Settings
from worker.http.server import serve
from worker.process.runner import Worker


def test_every_route_has_its_own_label(settings: Settings, run_once: Callable[..., Worker]) -> None:
    server = serve(run_once(), settings.with_overrides(http_port=0))
    try:
        routes = set(server.get_routes) | set(server.post_routes)
    finally:
        server.shutdown()
    assert routes == set(metrics.HTTP_ROUTES)


def ipv6_loopback() -> bool:
    try:
        with socket.create_server(("::1", 0), family=socket.AF_INET6):
            return True
    except OSError:
        return False


@pytest.mark.parametrize(
    ("host", "also"),
    [
        ("::1", None),  # IPv6 loopback
        ("::", "127.0.0.1"),  # every interface: IPv6, and IPv4 too (dual stack)
    ],
)
def test_an_ipv6_address_is_listened_on(
    host: str, also: str | None, settings: Settings, run_once: Callable[..., Worker]
) -> None:
    """EMBED_HTTP_HOST=:: or ::1 was refused as 'does not resolve to an IPv4 address' (exit 2):
    the server listened on IPv4 only."""
    if not ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback")
    server = serve(run_once(), settings.with_overrides(http_port=0, http_host=host))
    try:
        port = server.front.address[1]
        assert server.url == f"http://[{host}]:{port}"
        with urllib.request.urlopen(f"http://[::1]:{port}/healthz", timeout=10) as answer:
            assert answer.status == 200
        if also is not None and socket.has_dualstack_ipv6():
            with urllib.request.urlopen(f"http://{also}:{port}/healthz", timeout=10) as answer:
                assert answer.status == 200
        assert (server.post_refusal is None) == (host == "::1")  # loopback: POST without token
    finally:
        server.shutdown()
