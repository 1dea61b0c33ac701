"""A scripted HTTP server on 127.0.0.1 for the remote unit tests: canned replies, no HAPI."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.netutil import serve_local


@dataclass
class Reply:
    """One scripted answer: a status with headers and a body (a dict is sent as JSON), or a fault.

    `reset` closes the connection without answering (the client sees a transport error);
    `stall_s` waits before answering (read-timeout tests).
    """

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False
    stall_s: float = 0.0


@dataclass
class Seen:
    """One request the stub received."""

    method: str
    path: str  # without the query
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The request body, parsed."""
        return json.loads(self.body)


Responder = Callable[[Seen], Reply]


@dataclass
class Stub:
    """The running stub: its base URL, the requests it saw, and how it answers.

    `routes` maps "METHOD /path" to one Reply (every time) or a list (served in order, the last
    one repeated); `respond`, when set, answers everything instead.
    """

    url: str = ""
    routes: dict[str, Reply | list[Reply]] = field(default_factory=dict)
    respond: Responder | None = None
    seen: list[Seen] = field(default_factory=list)

    def answer(self, req: Seen) -> Reply:
        """The scripted reply for `req` (404 with an OperationOutcome when nothing matches)."""
        if self.respond is not None:
            return self.respond(req)
        route = self.routes.get(f"{req.method} {req.path}")
        if isinstance(route, list):
            return route.pop(0) if len(route) > 1 else route[0]
        if route is not None:
            return route
        return Reply(404, outcome(f"stub: no route for {req.method} {req.path}"))


def outcome(text: str, code: str = "processing") -> dict[str, Any]:
    """An OperationOutcome with one error issue."""
    return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": text}]}


def _handler(stub: Stub) -> type[http.server.BaseHTTPRequestHandler]:
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
            return  # quiet: tests read stub.seen

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            # "" posts to the base with a trailing slash ("/fhir/"); route it as the base itself.
            path = parts.path.rstrip("/") or "/"
            req = Seen(self.command, path, parse_qs(parts.query), dict(self.headers), body)
            with lock:
                stub.seen.append(req)
                reply = stub.answer(req)
            if reply.stall_s:
                time.sleep(reply.stall_s)
            if reply.reset:
                self.close_connection = True
                return
            data = reply.body if isinstance(reply.body, bytes) else b""
            headers = dict(reply.headers)
            if reply.body is not None and not isinstance(reply.body, bytes):
                data = json.dumps(reply.body).encode()
                headers.setdefault("Content-Type", "application/fhir+json")
            self.send_response(reply.status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = _serve
        do_POST = _serve
        do_PUT = _serve
        do_DELETE = _serve

    return Handler


@contextmanager
def stub_server(
    routes: dict[str, Reply | list[Reply]] | None = None, respond: Responder | None = None
) -> Iterator[Stub]:
    """Run a stub on a free loopback port; `stub.url` is its root (no path)."""
    stub = Stub(routes=routes or {}, respond=respond)
    with serve_local(_handler(stub)) as port:
        stub.url = f"http://127.0.0.1:{port}"
        yield stub


def capability(
    version: str = "4.0.1", interactions: tuple[str, ...] = ("transaction", "batch"), **ops: list[str]
) -> dict[str, Any]:
    """A CapabilityStatement: FHIR `version`, system `interactions`, and per resource type its operations."""
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "fhirVersion": version,
        "rest": [
            {
                "mode": "server",
                "interaction": [{"code": c} for c in interactions],
                "resource": [
                    {
                        "type": rtype,
                        "searchParam": [{"name": "url", "type": "uri"}],
                        "operation": [
                            {"name": n, "definition": f"http://example.org/OperationDefinition/{n}"} for n in names
                        ],
                    }
                    for rtype, names in ops.items()
                ],
            }
        ],
    }
