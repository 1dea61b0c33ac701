"""Test helper: a loopback port that nothing listens on right now."""

from __future__ import annotations

import socket


def free_port() -> int:
    """Bind to port 0, read the port the kernel chose, release it (free for a server or a refused connection)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port
