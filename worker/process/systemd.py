"""Telling systemd how the service is doing (sd_notify), for units with `Type=notify`.

The protocol is one datagram of `KEY=value` lines to the Unix socket named by `NOTIFY_SOCKET`
(a leading `@` means the abstract namespace). Without that variable, outside systemd, every call
does nothing. Notification is best effort: a failure to send is logged, never raised, because
the worker's job does not depend on it.
"""

from __future__ import annotations

import logging
import os
import socket

logger = logging.getLogger(__name__)


def notify(*, ready: bool = False, stopping: bool = False, status: str | None = None) -> bool:
    """Sends READY=1, STOPPING=1 and/or STATUS=...; returns whether a message went out."""
    lines = []
    if ready:
        lines.append("READY=1")
    if stopping:
        lines.append("STOPPING=1")
    if status is not None:
        lines.append("STATUS=" + " ".join(status.split()))  # one line: newlines end a field
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or not lines:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(lines).encode())
    except OSError as exc:
        logger.debug("sd_notify to %s failed: %s", address, exc)
        return False
    return True
