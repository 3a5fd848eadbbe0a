"""The HTTP side's routes are the ones /metrics names (worker/metrics/serving.py: HTTP_ROUTES): a route
added without its label would be counted as `other`, with the 404s."""

from __future__ import annotations

from collections.abc import Callable

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
