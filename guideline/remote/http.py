"""One HTTP session per run for FHIR and CDS Hooks servers: timeouts, one retry function, safe auth."""

from __future__ import annotations

import email.utils
import json
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from guideline.core.errors import BadInputError, ServerRejectedError, ServerUnreachableError, UsageError

FHIR_JSON = "application/fhir+json"
# Retried statuses: request timeout, rate limiting and server-side failures are transient by
# definition (RFC 9110 §15.5.9, RFC 6585 §4, §15.6); every other 4xx is our mistake: fail fast.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
TOKEN_ENV = "GUIDELINE_TOKEN"  # noqa: S105 - the name of the variable, not a secret


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 10.0
    # The whole call, retries and waits included, never takes longer than this.
    total_budget_s: float = 60.0


@dataclass(frozen=True)
class Timeouts:
    connect_s: float = 5.0
    # $apply on a cold server compiles CQL and can take tens of seconds the first time.
    read_s: float = 120.0


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def operation_outcome_text(body: Any) -> str:
    """The diagnostics of an OperationOutcome body, joined; '' when it is not one."""
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return ""
    parts = []
    for issue in body.get("issue") or []:
        text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or issue.get("code")
        if text:
            parts.append(f"{issue.get('severity', 'error')}: {text}")
    return "; ".join(parts)


def read_token(token_file: Path | None) -> str | None:
    """Bearer token from a file (first line) or GUIDELINE_TOKEN; never echoed anywhere."""
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise BadInputError(f"cannot read token file {token_file}: {e.strerror}") from None
        if not token:
            raise BadInputError(f"token file {token_file} is empty")
        return token
    env = os.environ.get(TOKEN_ENV, "").strip()
    return env or None


class _RedactedAuth(requests.auth.AuthBase):
    """Adds the bearer header at send time; its repr never shows the token."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self._token}"
        return r

    def __repr__(self) -> str:
        return "<bearer token redacted>"


class Client:
    """A FHIR/CDS client bound to one base URL and one requests.Session."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        verify_tls: bool = True,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise UsageError(f"server URL must start with http:// or https://, got '{base_url}'")
        self.base_url = base_url.rstrip("/")
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self.session = requests.Session()
        self.session.verify = verify_tls
        # no-cache: HAPI (and other servers) may answer a repeated search from a cache that
        # predates our own writes; comparing before publishing needs the current state.
        self.session.headers.update({"Accept": FHIR_JSON, "User-Agent": "guideline-cli", "Cache-Control": "no-cache"})
        if token:
            self.session.auth = _RedactedAuth(token)
        self.requests_sent = 0

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.close()

    def same_origin(self, url: str) -> bool:
        """True when an absolute `url` has this server's scheme, host and port (relative URLs are)."""
        from urllib.parse import urlsplit

        if not url.startswith(("http://", "https://")):
            return True

        def origin(u: str) -> tuple[str, str | None, int | None]:
            parts = urlsplit(u)
            return parts.scheme, parts.hostname, parts.port or {"http": 80, "https": 443}.get(parts.scheme)

        return origin(url) == origin(self.base_url)

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = FHIR_JSON,
        ok: tuple[int, ...] = (200, 201),
        cached: bool = False,
    ) -> requests.Response:
        """Send with retries (transport errors, 408/429/5xx, Retry-After); raise typed errors.

        `cached` drops the session's Cache-Control: no-cache for this request, for content that
        does not change with our writes (the CapabilityStatement: HAPI rebuilds it on no-cache).
        """
        url = self.url(path)
        headers: dict[str, str | None] = {"Content-Type": content_type} if json_body is not None else {}
        if cached:
            headers["Cache-Control"] = None  # requests: None removes a session header
        data = json.dumps(json_body).encode("utf-8") if json_body is not None else None
        start = time.monotonic()
        last = ""
        for attempt in range(1, self.retry.attempts + 1):
            wait: float | None = None
            try:
                self.requests_sent += 1
                resp = self.session.request(
                    method,
                    url,
                    data=data,
                    params=params,
                    headers=headers,
                    timeout=(self.timeouts.connect_s, self.timeouts.read_s),
                )
            except requests.exceptions.SSLError as e:
                raise ServerUnreachableError(
                    f"TLS verification failed for {url}: {type(e).__name__}; fix the certificate or pass "
                    "--insecure if you really mean to skip verification"
                ) from None
            except (requests.ConnectionError, requests.Timeout) as e:
                last = f"{type(e).__name__} contacting {method} {url}"
            else:
                if resp.status_code in ok:
                    return resp
                if resp.status_code in RETRY_STATUSES:
                    last = f"HTTP {resp.status_code} from {method} {url}{self._outcome_suffix(resp)}"
                    wait = parse_retry_after(resp.headers.get("Retry-After"))
                else:
                    raise self._rejected(method, url, resp)
            if attempt == self.retry.attempts:
                break
            delay = (
                wait if wait is not None else min(self.retry.max_delay_s, self.retry.base_delay_s * 2 ** (attempt - 1))
            )
            delay = delay if wait is not None else delay * (0.5 + random.random() / 2)  # noqa: S311 - jitter
            if time.monotonic() - start + delay > self.retry.total_budget_s:
                break
            self._sleep(delay)
        elapsed = time.monotonic() - start
        raise ServerUnreachableError(
            f"{self.base_url} did not answer successfully after {attempt} attempt(s) in {elapsed:.1f} s: {last}; "
            "check that the server is running and the URL is right"
        )

    @staticmethod
    def _outcome_suffix(resp: requests.Response) -> str:
        try:
            text = operation_outcome_text(resp.json())
        except ValueError:
            text = ""
        return f": {text}" if text else ""

    def _rejected(self, method: str, url: str, resp: requests.Response) -> ServerRejectedError:
        hint = {
            401: "the server wants credentials: pass --token-file or set GUIDELINE_TOKEN",
            403: "the token is not allowed to do this",
            404: "not found: check the server base URL",
        }.get(resp.status_code, "")
        msg = f"{method} {url} failed with HTTP {resp.status_code}{self._outcome_suffix(resp)}"
        if hint:
            msg += f" ({hint})"
        err = ServerRejectedError(msg)
        err.status = resp.status_code  # type: ignore[attr-defined]
        return err

    def get_json(
        self,
        path: str,
        params: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
        *,
        cached: bool = False,
    ) -> Any:
        return self._json(self.request("GET", path, params=params, ok=ok, cached=cached), path)

    def post_json(
        self, path: str, body: Any, *, content_type: str = FHIR_JSON, ok: tuple[int, ...] = (200, 201)
    ) -> Any:
        return self._json(self.request("POST", path, json_body=body, content_type=content_type, ok=ok), path)

    def _json(self, resp: requests.Response, path: str) -> Any:
        try:
            return resp.json()
        except ValueError:
            snippet = resp.text[:200].replace("\n", " ")
            raise ServerRejectedError(
                f"{self.url(path)} answered HTTP {resp.status_code} with non-JSON content "
                f"({resp.headers.get('Content-Type', 'no content type')}): {snippet!r}"
            ) from None
