"""Test helpers: a loopback port that nothing listens on right now, and a loopback HTTP server in a thread."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    """Bind to port 0, read the port the kernel chose, release it (free for a server or a refused connection)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # Clients in these tests hang up on purpose (read timeouts, a next page never read); a handler then writes
        # to a closed socket. socketserver would print that traceback to stderr, where a later test's
        # "no traceback in the CLI's stderr" check would see it; tests read their proxies' own logs instead.
        return


@contextmanager
def serve_local(handler: type[http.server.BaseHTTPRequestHandler], poll_interval: float = 0.01) -> Iterator[int]:
    """Serve `handler` on a free loopback port in a daemon thread; yields the port, shuts down on exit.

    Nagle's algorithm is off on every connection: the stdlib handler writes a response's headers and body in two
    sends, and with Nagle on the body waits for the client's delayed ACK of the headers (about 40 ms on Linux), which
    made every request through a test proxy 5x slower than the server behind it.
    """
    quick = type(handler.__name__, (handler,), {"disable_nagle_algorithm": True})
    server = _QuietServer(("127.0.0.1", 0), quick)
    server.daemon_threads = True
    # A short poll interval: shutdown() waits for the serving loop's next poll (0.5 s by default).
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": poll_interval}, daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
