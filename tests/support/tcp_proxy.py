"""A TCP proxy in front of the test server, whose outage a test chooses: `forward` (bytes both
ways), `slam` (each connection cut: the sessions open cut at once, each new one closed as soon
as it is accepted: a server gone) or `hold` (each new connection accepted and never answered:
a host that drops packets, where a client waits out its connect timeout)."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from collections.abc import Iterator

from psycopg.conninfo import conninfo_to_dict, make_conninfo

MODES = ("forward", "slam", "hold")


class Proxy:
    def __init__(self, dsn: str) -> None:
        params = conninfo_to_dict(dsn)
        self.target = (str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.dsn = make_conninfo(dsn, host="127.0.0.1", port=self._listener.getsockname()[1])
        self.mode = "forward"
        self.accepted = {mode: 0 for mode in MODES}  # connections accepted in each mode
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="test-proxy", daemon=True)
        self._thread.start()

    def set_mode(self, mode: str) -> None:
        assert mode in MODES, mode
        with self._lock:
            self.mode = mode
            if mode == "slam":
                cut, self._open = self._open, []
            else:
                cut = []
        for each in cut:
            with contextlib.suppress(OSError):
                each.shutdown(socket.SHUT_RDWR)
            each.close()

    def close(self) -> None:
        self.set_mode("slam")
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                mode = self.mode
                self.accepted[mode] += 1
                if mode != "slam":
                    self._open.append(client)
            if mode == "slam":
                client.close()
            elif mode == "forward":
                threading.Thread(target=self._forward, args=(client,), daemon=True).start()

    def _forward(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.target)
        except OSError:
            client.close()
            return
        with self._lock:
            self._open.append(server)
        try:
            with contextlib.suppress(OSError), selectors.DefaultSelector() as selector:
                selector.register(client, selectors.EVENT_READ, server)
                selector.register(server, selectors.EVENT_READ, client)
                while True:
                    for key, _ in selector.select():
                        data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                        if not data:
                            return
                        key.data.sendall(data)
        finally:
            client.close()
            server.close()


@contextlib.contextmanager
def proxy(dsn: str) -> Iterator[Proxy]:
    found = Proxy(dsn)
    try:
        yield found
    finally:
        found.close()
