"""A small fault-injecting HTTP proxy on 127.0.0.1 for client resilience tests (test fixture only)."""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tests.support.netutil import serve_local


@dataclass
class Fault:
    """What to do with one request: answer `status` (with headers/body), stall, or forward."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    stall_s: float = 0.0  # sleep before answering (read-timeout tests)


@dataclass
class Plan:
    """Faults served in order, then `then` for every later request (None = forward upstream)."""

    faults: list[Fault] = field(default_factory=list)
    then: Fault | None = None
    seen: list[dict[str, str]] = field(default_factory=list)  # method, path, headers of each request


def _handler(upstream: str, plan: Plan) -> type[http.server.BaseHTTPRequestHandler]:
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
            return  # quiet: tests read `plan.seen` instead

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with lock:
                plan.seen.append({"method": self.command, "path": self.path, **dict(self.headers)})
                fault = plan.faults.pop(0) if plan.faults else plan.then
            if fault is not None and fault.stall_s:
                time.sleep(fault.stall_s)
            if fault is not None and fault.status is not None:
                self.send_response(fault.status)
                for k, v in fault.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(fault.body)))
                self.end_headers()
                self.wfile.write(fault.body)
                return
            req = urllib.request.Request(upstream + self.path, data=body or None, method=self.command)
            for k in ("Content-Type", "Accept", "Authorization", "Cache-Control"):
                if self.headers.get(k):
                    req.add_header(k, self.headers[k])
            try:
                with urllib.request.urlopen(req, timeout=120) as resp:  # noqa: S310 - loopback upstream
                    status, data, ctype = resp.status, resp.read(), resp.headers.get("Content-Type", "")
            except urllib.error.HTTPError as e:
                status, data, ctype = e.code, e.read(), e.headers.get("Content-Type", "")
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = _serve
        do_POST = _serve
        do_PUT = _serve

    return Handler


@contextmanager
def fault_proxy(upstream: str, plan: Plan) -> Iterator[str]:
    """Run the proxy for `upstream` (scheme://host:port, no path); yields its base URL."""
    with serve_local(_handler(upstream.rstrip("/"), plan)) as port:
        yield f"http://127.0.0.1:{port}"


def outcome(text: str) -> bytes:
    return json.dumps(
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "processing", "diagnostics": text}],
        }
    ).encode()
