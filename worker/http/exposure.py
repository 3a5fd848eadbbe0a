"""Who may POST: a worker listening beyond loopback serves POST routes only with a token, or
when told its network is trusted (docs/http.md)."""

from __future__ import annotations

import ipaddress
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from worker.config import Settings


def post_refusal(settings: Settings) -> str | None:
    """Why POST routes are refused, or None: bound beyond loopback with no token and no
    explicit EMBED_HTTP_ALLOW_UNAUTHENTICATED=1, anyone who can reach the port could make the
    worker embed (CPU) and enqueue work."""
    if settings.http_token or _is_loopback(settings.http_host):
        return None
    if settings.http_allow_unauthenticated:
        return None
    return (
        f"POST routes are off: HTTP listens on {settings.http_host} without EMBED_HTTP_TOKEN. "
        "Set EMBED_HTTP_TOKEN (clients send Authorization: Bearer <token>), or "
        "EMBED_HTTP_ALLOW_UNAUTHENTICATED=1 if the network in front of the worker is trusted."
    )


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(
                ipaddress.ip_address(info[4][0]).is_loopback
                for info in socket.getaddrinfo(host, None)
            )
        except (OSError, ValueError):
            return False
