"""One HTTP session per run for FHIR and CDS Hooks servers: timeouts, one retry function, safe auth."""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from guideline.core.errors import (
    BadInputError,
    ForbiddenError,
    NotFoundError,
    PreconditionFailedError,
    ServerRejectedError,
    ServerUnreachableError,
    UsageError,
)
from guideline.core.fhir import issue_text, outcome_issues

FHIR_JSON = "application/fhir+json"
# Retried statuses: request timeout, rate limiting and server-side failures are transient by
# definition (RFC 9110 §15.5.9, RFC 6585 §4, §15.6); every other 4xx is our mistake: fail fast.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Query parameters: a mapping, or (name, value) pairs when a name repeats (_typeFilter).
Params = Mapping[str, str] | Sequence[tuple[str, str]]
TOKEN_ENV = "GUIDELINE_TOKEN"  # noqa: S105 - the name of the variable, not a secret

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long `Client.request` retries a transient failure."""

    attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 10.0
    # The whole call, retries and waits included, never takes longer than this.
    total_budget_s: float = 60.0


@dataclass(frozen=True)
class Timeouts:
    """Per-request timeouts: connecting, and waiting for each read of the answer."""

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
    for issue in outcome_issues(body):
        text = issue_text(issue)
        if text:
            parts.append(f"{issue.get('severity', 'error')}: {text}")
    return "; ".join(parts)


def read_token(token_file: Path | None) -> str | None:
    """Bearer token from a file (its first line) or GUIDELINE_TOKEN, else None; never echoed anywhere.

    A file named but unreadable, empty, or a token with spaces or control characters inside is a
    BadInputError that names the file or variable, never the token.
    """
    if token_file is not None:
        try:
            text = token_file.read_text(encoding="utf-8")
        except OSError as e:
            raise BadInputError(f"cannot read token file {token_file}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise BadInputError(f"token file {token_file} is not UTF-8 text; put the bare token in it") from None
        lines = text.strip().splitlines()
        if not lines:
            raise BadInputError(f"token file {token_file} is empty; put the bearer token on its first line")
        return _checked_token(lines[0].strip(), f"token file {token_file}")
    env = os.environ.get(TOKEN_ENV, "").strip()
    return _checked_token(env, TOKEN_ENV) if env else None


def _checked_token(token: str, where: str) -> str:
    # requests refuses such a header with an error that quotes its value: the token would be printed.
    if any(c.isspace() or not c.isprintable() for c in token):
        raise BadInputError(f"the token in {where} contains spaces or control characters; put only the bare token")
    return token


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
    """A FHIR/CDS client bound to one base URL and one requests.Session (one per run).

    Every request goes through `request`: one retry function, explicit timeouts, the bearer token
    added at send time and never shown, typed errors for every failure.
    """

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

    def __repr__(self) -> str:
        auth = ", bearer token" if self.session.auth is not None else ""
        return f"<Client {self.base_url}{auth}>"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.close()

    def same_origin(self, url: str) -> bool:
        """True when an absolute `url` has this server's scheme, host and port (relative URLs are)."""
        if not url.startswith(("http://", "https://")):
            return True
        return _origin(url) == _origin(self.base_url)

    def url(self, path: str) -> str:
        """The absolute URL for `path`: relative paths are under the base URL, absolute ones kept."""
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Params | None = None,
        content_type: str = FHIR_JSON,
        ok: tuple[int, ...] = (200, 201),
        cached: bool = False,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        send_token: bool = True,
    ) -> requests.Response:
        """Send with retries (transport errors, 408/429/5xx, Retry-After); raise typed errors.

        A status in `ok` is returned; any other status that is not retried raises ServerRejectedError
        (or a subclass: NotFoundError, ForbiddenError, PreconditionFailedError) at once; when the
        attempts or the time budget run out, ServerUnreachableError names the last failure.
        `cached` drops the session's Cache-Control: no-cache for this request, for content that
        does not change with our writes (the CapabilityStatement: HAPI rebuilds it on no-cache).
        `headers` are added to (or replace) the session's; `stream` leaves the body unread for
        `iter_content` (downloads); `send_token=False` sends this request without the bearer token
        (Bulk Data files the server says need none, perhaps on another host).
        """
        url = self.url(path)
        sent: dict[str, str | None] = {"Content-Type": content_type} if json_body is not None else {}
        if cached:
            sent["Cache-Control"] = None  # requests: None removes a session header
        sent.update(headers or {})
        # A request-level auth wins over the session's: a no-op one sends no Authorization header.
        auth = None if send_token else _no_auth
        data = json.dumps(json_body).encode("utf-8") if json_body is not None else None
        start = time.monotonic()
        attempt, last = 0, ""
        for attempt in range(1, self.retry.attempts + 1):
            resp, last, wait = self._send_once(
                method, url, data=data, params=params, headers=sent, ok=ok, stream=stream, auth=auth
            )
            if resp is not None:
                return resp
            if attempt == self.retry.attempts:
                break
            delay = self._delay(attempt, wait)
            if time.monotonic() - start + delay > self.retry.total_budget_s:
                break
            log.info("%s; retrying in %.1f s (attempt %d of %d)", last, delay, attempt + 1, self.retry.attempts)
            self._sleep(delay)
        elapsed = time.monotonic() - start
        raise ServerUnreachableError(
            f"{self.base_url} did not answer successfully after {attempt} attempt(s) in {elapsed:.1f} s: {last}; "
            "check that the server is running and the URL is right"
        )

    def _send_once(
        self,
        method: str,
        url: str,
        *,
        data: bytes | None,
        params: Params | None,
        headers: Mapping[str, str | None],
        ok: tuple[int, ...],
        stream: bool = False,
        auth: Callable[[requests.PreparedRequest], requests.PreparedRequest] | None = None,
    ) -> tuple[requests.Response | None, str, float | None]:
        """One attempt: (the response, "", None) when it is ok, else (None, what failed, Retry-After).

        Failures worth retrying come back; the others (TLS, a non-retried status) raise.
        """
        self.requests_sent += 1
        try:
            resp = self.session.request(
                method,
                url,
                data=data,
                params=params,
                headers=headers,
                timeout=(self.timeouts.connect_s, self.timeouts.read_s),
                stream=stream,
                auth=auth,
            )
        except requests.exceptions.SSLError as e:
            # A certificate problem does not heal by retrying; say how to fix it.
            raise ServerUnreachableError(
                f"TLS verification failed for {url}: {type(e).__name__}; fix the certificate or pass "
                "--insecure if you really mean to skip verification"
            ) from None
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
            # Refused, reset, timed out or cut off mid-answer: transient, so retried.
            log.debug("%s %s: %s", method, url, type(e).__name__)
            return None, f"{type(e).__name__} contacting {method} {url}", None
        except requests.exceptions.InvalidURL:
            raise UsageError(f"'{url}' is not a valid URL; check --server") from None
        except requests.RequestException as e:
            # Anything else (a redirect loop, an answer requests cannot decode) will not heal by retrying.
            raise ServerRejectedError(f"{method} {url} failed: {type(e).__name__}") from None
        log.debug("%s %s: HTTP %d", method, url, resp.status_code)
        if resp.status_code in ok:
            return resp, "", None
        if resp.status_code in RETRY_STATUSES:
            failure = f"HTTP {resp.status_code} from {method} {url}{_outcome_suffix(_outcome(resp))}"
            return None, failure, parse_retry_after(resp.headers.get("Retry-After"))
        raise _rejected(method, url, resp)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before the next attempt: the server's Retry-After, else backoff with jitter."""
        if retry_after is not None:
            return retry_after
        backoff = min(self.retry.max_delay_s, self.retry.base_delay_s * 2.0 ** (attempt - 1))
        # Jitter (50-100 %) keeps clients that failed together from retrying in lockstep.
        return backoff * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not cryptography

    def get_json(
        self,
        path: str,
        params: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
        *,
        cached: bool = False,
    ) -> Any:
        """GET `path` (see `request`) and return its parsed JSON body."""
        return self._json(self.request("GET", path, params=params, ok=ok, cached=cached), path)

    def post_json(
        self, path: str, body: Any, *, content_type: str = FHIR_JSON, ok: tuple[int, ...] = (200, 201)
    ) -> Any:
        """POST `body` as JSON to `path` (see `request`) and return the parsed JSON answer."""
        return self._json(self.request("POST", path, json_body=body, content_type=content_type, ok=ok), path)

    def _json(self, resp: requests.Response, path: str) -> Any:
        try:
            return resp.json()
        except ValueError:
            snippet = resp.text[:200].replace("\n", " ")
            raise ServerRejectedError(
                f"{self.url(path)} answered HTTP {resp.status_code} with non-JSON content "
                f"({resp.headers.get('Content-Type', 'no content type')}): {snippet!r}",
                status=resp.status_code,
            ) from None


def _no_auth(r: requests.PreparedRequest) -> requests.PreparedRequest:
    """An auth that adds nothing: used per request to leave the session's bearer token out."""
    return r


def _origin(url: str) -> tuple[str, str | None, int | None]:
    """(scheme, host, port) of an absolute URL, with the scheme's default port made explicit."""
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port or {"http": 80, "https": 443}.get(parts.scheme)


def _outcome(resp: requests.Response) -> dict[str, Any] | None:
    """The OperationOutcome a response carries, or None (no body, not JSON, another resource)."""
    try:
        body = resp.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome" else None


def _outcome_suffix(outcome: dict[str, Any] | None) -> str:
    text = operation_outcome_text(outcome)
    return f": {text}" if text else ""


# Typed errors and hints for the refusals that have a FHIR meaning of their own; any other status
# is a plain ServerRejectedError. All of them exit 5.
_REFUSALS: dict[int, tuple[type[ServerRejectedError], str]] = {
    401: (ForbiddenError, "the server wants credentials: pass --token-file or set GUIDELINE_TOKEN"),
    403: (ForbiddenError, "the token is not allowed to do this"),
    404: (NotFoundError, "not found: check the server base URL"),
    410: (NotFoundError, ""),
    412: (PreconditionFailedError, ""),
}


def _service_error(resp: requests.Response) -> str:
    """The `{"error": "..."}` text a CDS Hooks service (ours, or another) answers with; '' when there is none."""
    try:
        body = resp.json()
    except ValueError:
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    return f": {error}" if isinstance(error, str) and error else ""


def _rejected(method: str, url: str, resp: requests.Response) -> ServerRejectedError:
    """The typed error for a non-retried, unexpected status, with the server's OperationOutcome
    (or a CDS service's error text)."""
    outcome = _outcome(resp)
    cls, hint = _REFUSALS.get(resp.status_code, (ServerRejectedError, ""))
    cds = "/cds-services/" in url
    detail = _outcome_suffix(outcome) or (_service_error(resp) if cds else "")
    msg = f"{method} {url} failed with HTTP {resp.status_code}{detail}"
    if resp.status_code == 401 and cds:
        # A CDS service's 401 is about the caller's JWT (CDS Hooks security), not the FHIR bearer token.
        hint = "this CDS service requires signed calls: pass --jwt-key PEM --jwt-iss ISS (see `guideline cds keygen`)"
    if hint:
        msg += f" ({hint})"
    return cls(msg, status=resp.status_code, outcome=outcome)
