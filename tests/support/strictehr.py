"""A strict test EHR: a proxy in front of the test HAPI that serves only CDS Hooks 2.0's prefetch subset.

CDS Hooks 2.0, "Prefetch query restrictions" (https://cds-hooks.hl7.org/2.0/#prefetch-query-restrictions):
"this specification RECOMMENDS that prefetch queries only use a subset of the full functionality available in
the FHIR specification": instance reads, type searches, resource references such as
`patient={{context.patientId}}`, token search parameters by equality (optionally `:in`), date search parameters
with the prefixes eq, lt, gt, ge, le, `_count` and `_sort`. Some EHR FHIR APIs hold to exactly that and answer
anything else with 400, which is what this proxy does (with an OperationOutcome). It also behaves like such an
EHR in two ways the CDS server must cope with: searchsets come in small pages (`_count` capped at `PAGE_SIZE`),
and every page carries an OperationOutcome entry (`search.mode` = outcome). Writes and paging continuations
(the server's own next links, rewritten to point at the proxy) pass through. Test fixture only.
"""

from __future__ import annotations

import http.server
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from tests.support.netutil import serve_local

PAGE_SIZE = 2
# Reference parameters a prefetch template may bind to the patient (CDS Hooks 2.0: "Resource references").
REFERENCE_PARAMS = frozenset({"patient", "subject"})
# Token parameters of the resource types the guideline reads (R4 search parameter registry): equality or :in.
TOKEN_PARAMS = frozenset(
    {"code", "status", "category", "clinical-status", "verification-status", "intent", "type", "identifier"}
)
# Date parameters of those types (R4 registry): prefixes eq, lt, gt, ge, le only.
DATE_PARAMS = frozenset(
    {"date", "authoredon", "effective", "effective-time", "onset-date", "recorded-date", "whenhandedover", "issued"}
)
DATE_PREFIXES = ("eq", "lt", "gt", "ge", "le")
# HAPI's own paging continuation ([base]?_getpages=...): a next link the server made, not a template.
PAGING_PARAMS = frozenset({"_getpages", "_getpagesoffset", "_count", "_bundletype", "_pretty", "_format"})


def subset_violations(query: str) -> list[str]:
    """Why `query` (a relative read or search, templates' tokens filled or not) is outside the subset; [] if inside."""
    path, _, qs = query.partition("?")
    parts = [p for p in path.strip("/").split("/") if p]
    if not qs:
        return [] if len(parts) == 2 and parts[0][:1].isupper() else [f"'{path}' is not an instance read"]
    if len(parts) != 1 or not parts[0][:1].isupper():
        return [f"'{path}' is not a type-level search"]
    out = []
    for name, value in parse_qsl(qs, keep_blank_values=True):
        base, _, modifier = name.partition(":")
        if "." in base:
            out.append(f"chained parameter '{name}'")
        elif base in REFERENCE_PARAMS and not modifier:
            continue
        elif base in TOKEN_PARAMS and modifier in ("", "in"):
            continue
        elif base in DATE_PARAMS and not modifier:
            if value[:2].isalpha() and not value.startswith(DATE_PREFIXES):
                out.append(f"date prefix of '{name}={value}' (only {', '.join(DATE_PREFIXES)})")
        elif name == "_count" and value.isdigit():
            continue
        elif name == "_sort":
            continue
        else:
            out.append(f"search parameter '{name}'")
    return out


def outcome(text: str, severity: str = "error") -> dict[str, Any]:
    """An OperationOutcome with one issue."""
    code = "informational" if severity == "information" else "not-supported"
    return {"resourceType": "OperationOutcome", "issue": [{"severity": severity, "code": code, "diagnostics": text}]}


@dataclass
class StrictLog:
    """What the strict EHR saw: every GET (path and query) and every refusal with its reasons."""

    reads: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


def _handler(upstream: str, log: StrictLog) -> type[http.server.BaseHTTPRequestHandler]:
    lock = threading.Lock()
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(upstream))
    base_path = urlsplit(upstream).path.rstrip("/")

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
            return  # quiet: tests read the StrictLog instead

        def _reply(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _forward(self, path: str, body: bytes | None) -> tuple[int, bytes, str]:
            req = urllib.request.Request(origin + path, data=body, method=self.command)
            for k in ("Content-Type", "Accept", "Authorization", "Cache-Control", "Prefer"):
                if self.headers.get(k):
                    req.add_header(k, self.headers[k])
            try:
                with urllib.request.urlopen(req, timeout=120) as resp:  # noqa: S310 - loopback upstream
                    return resp.status, resp.read(), resp.headers.get("Content-Type", "")
            except urllib.error.HTTPError as e:
                return e.code, e.read(), e.headers.get("Content-Type", "")

        def _get(self) -> None:
            split = urlsplit(self.path)
            relative = split.path[len(base_path) :].lstrip("/") if split.path.startswith(base_path) else split.path
            params = parse_qsl(split.query, keep_blank_values=True)
            query = relative + (f"?{split.query}" if split.query else "")
            paging = relative == "" and any(k == "_getpages" for k, _ in params)
            with lock:
                log.reads.append(query)
            problems = [] if paging or relative == "metadata" else subset_violations(query)
            if problems:
                with lock:
                    log.refused.append(f"{query}: {'; '.join(problems)}")
                text = f"strict test EHR: outside CDS Hooks 2.0's prefetch subset: {'; '.join(problems)}"
                self._reply(400, json.dumps(outcome(text)).encode(), "application/fhir+json")
                return
            forwarded = self.path
            if split.query and not paging:  # a search: small pages, so the client must follow next links
                kept = [(k, v) for k, v in params if k != "_count"]
                count = min([int(v) for k, v in params if k == "_count"] + [PAGE_SIZE])
                forwarded = f"{split.path}?{urlencode([*kept, ('_count', str(count))], safe='|,:/')}"
            status, data, ctype = self._forward(forwarded, None)
            if status == 200:
                data = self._reshaped(data)
            self._reply(status, data, ctype)

        def _reshaped(self, data: bytes) -> bytes:
            """A searchset page with its links pointing here and an OperationOutcome entry added."""
            try:
                body = json.loads(data)
            except ValueError:
                return data
            if not isinstance(body, dict) or body.get("resourceType") != "Bundle" or body.get("type") != "searchset":
                return data
            host = f"http://{self.headers.get('Host')}"
            for link in body.get("link") or []:
                if isinstance(link.get("url"), str) and link["url"].startswith(origin):
                    link["url"] = host + link["url"][len(origin) :]
            note = outcome("strict test EHR: results may be incomplete (test warning)", "information")
            body["entry"] = [*(body.get("entry") or []), {"resource": note, "search": {"mode": "outcome"}}]
            return json.dumps(body).encode()

        def _pass(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            status, data, ctype = self._forward(self.path, body)
            self._reply(status, data, ctype)

        do_GET = _get
        do_POST = _pass
        do_PUT = _pass
        do_DELETE = _pass

    return Handler


@contextmanager
def strict_ehr(upstream: str, log: StrictLog) -> Iterator[str]:
    """Run the strict EHR in front of `upstream` (a FHIR base URL); yields its FHIR base URL (same path)."""
    with serve_local(_handler(upstream.rstrip("/"), log)) as port:
        yield f"http://127.0.0.1:{port}{urlsplit(upstream).path.rstrip('/')}"
