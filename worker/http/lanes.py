"""What the HTTP front (worker.http.front) serves a request in, shared by the front and each
connection it accepts (worker.http.connection): the lanes, a route (its lane and what answers
it), the service that routes a head, and the limits the front keeps."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from worker.http.protocol import Answer, Request

# What a lane's thread did with a request: the answer, and the error that kept it from the
# client, if one did.
Outcome = tuple[Answer, BaseException | None]


class Lane(enum.Enum):
    INLINE = "inline"
    PROBE = "probe"
    WORK = "work"


@dataclass(frozen=True)
class Route:
    lane: Lane
    run: Callable[[Request], Answer]  # may raise BadRequest, or whatever `failed()` answers


class Service(Protocol):
    """What the front serves: worker.http.server's routes."""

    def route(self, request: Request) -> Route:
        """The route for a request whose head was read (its body not yet), or a BadRequest:
        no such route or method, POST refused, a wrong token, a body it cannot take."""
        ...

    def failed(self, request: Request, exc: Exception) -> Answer:
        """The answer to an exception a route raised."""
        ...


@dataclass(frozen=True)
class Limits:
    timeout_seconds: float  # silence, a body's arrival, an answer's departure
    head_timeout_seconds: float  # a request line and headers, from their first byte
    max_body: int
    max_connections: int  # slots of work
    max_waiting_connections: int  # connections waiting for a request
