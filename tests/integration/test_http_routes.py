"""The HTTP side's routes are the ones /metrics names (worker/metrics/serving.py: HTTP_ROUTES): a route
added without its label would be counted as `other`, with the 404s."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.integration.conftest import WIDE, WIDE_DIMS
from tests.support.in_flight import in_process_worker, join_threads
from worker import config, exits, metrics
from worker.config import Settings
from worker.http.server import serve
from worker.models.loaded import LoadedModels
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


def test_embed_takes_a_local_model_the_database_registered_and_only_such(
    conn: psycopg.Connection[Any], settings: Settings, tiny_model_paths: str
) -> None:
    """POST /embed may name a registry model present on disk (docs/http.md): one that
    register_model(..., 'local') added, not only the catalog's (0.3.0 answered 400, "must name a
    known model"); a model directory on EMBED_MODEL_PATH nobody registered stays refused. Models
    of its own: the session's may have loaded it already."""
    conn.execute("SELECT embeddings.register_model(%s, %s, 'local')", (WIDE, WIDE_DIMS))
    models = LoadedModels(
        location=settings.model_location,
        downloads=settings.downloads,
        api_key=config.api_key_from_env,
        threads=1,
    )
    worker = in_process_worker(settings, models, once=True)
    assert worker.run() == exits.OK
    join_threads(worker)
    server = serve(worker, settings.with_overrides(http_port=0))
    try:
        status, body = post_json(server.url + "/embed", {"input": "hello", "model": WIDE})
        assert status == 200, body
        assert len(body["embedding"]) == WIDE_DIMS
        status, body = post_json(server.url + "/embed", {"input": "hello", "model": "tiny-b"})
        assert status == 400 and "must name a known model" in body["error"], body
        assert WIDE in body["error"]
    finally:
        server.shutdown()


def post_json(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())
