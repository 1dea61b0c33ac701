"""Verify the HTTP client against a local stub server: retries, budgets, typed errors, headers, token secrecy."""

from __future__ import annotations

import email.utils
import logging
import time
from pathlib import Path

import pytest

from guideline.core.errors import (
    BadInputError,
    ExitCode,
    ForbiddenError,
    NotFoundError,
    PreconditionFailedError,
    ServerRejectedError,
    ServerUnreachableError,
    UsageError,
)
from guideline.remote.http import FHIR_JSON, TOKEN_ENV, Client, RetryPolicy, Timeouts, parse_retry_after, read_token
from tests.support.netutil import free_port
from tests.unit.remote.stub import Reply, Stub, outcome, stub_server

TOKEN = "s3cr3t-UNIT-token-4711"  # noqa: S105 - a fake token the tests look for in output
OK = Reply(200, {"resourceType": "Patient", "id": "p"})
# Retries in these tests: no real waiting (the waits are recorded instead) and a short budget.
FAST = RetryPolicy(attempts=4, base_delay_s=0.01, max_delay_s=0.02, total_budget_s=5)


def _client(stub: Stub, waits: list[float], **kw: object) -> Client:
    kw.setdefault("retry", FAST)
    return Client(f"{stub.url}/fhir", sleep=waits.append, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retried_then_succeed(stub: Stub, waits: list[float], status: int) -> None:
    """Verify that 408, 429 and 5xx answers are retried with backoff and the later success is returned."""
    stub.routes["GET /fhir/Patient/p"] = [Reply(status, outcome("busy")), Reply(status), OK]
    with _client(stub, waits) as client:
        assert client.get_json("Patient/p")["id"] == "p"
    assert len(stub.seen) == 3 and client.requests_sent == 3
    assert len(waits) == 2
    # exponential backoff with 50-100 % jitter, capped at max_delay_s
    assert 0.005 <= waits[0] <= 0.01 and 0.01 <= waits[1] <= 0.02


def test_retry_after_in_seconds_is_honoured(stub: Stub, waits: list[float]) -> None:
    """Verify that a 429 with Retry-After in seconds waits exactly that long before retrying."""
    stub.routes["GET /fhir/Patient/p"] = [Reply(429, headers={"Retry-After": "3"}), OK]
    with _client(stub, waits) as client:
        client.get_json("Patient/p")
    assert waits == [3.0]


def test_retry_after_as_http_date_is_honoured(stub: Stub, waits: list[float]) -> None:
    """Verify that a 503 with Retry-After as an HTTP-date waits until that moment."""
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    stub.routes["GET /fhir/Patient/p"] = [Reply(503, headers={"Retry-After": when}), OK]
    with _client(stub, waits, retry=RetryPolicy(total_budget_s=60)) as client:
        client.get_json("Patient/p")
    assert len(waits) == 1 and 27 <= waits[0] <= 30


def test_parse_retry_after_forms() -> None:
    """Verify that Retry-After is read as delta-seconds and as an HTTP-date, a past date is 0, garbage None."""
    assert parse_retry_after(" 7 ") == 7.0
    assert parse_retry_after("Wed, 25 Nov 2026 00:00:10 GMT", now=1795564800.0) == 10.0
    assert parse_retry_after("Wed, 25 Nov 2026 00:00:10 GMT", now=1795564900.0) == 0.0
    assert parse_retry_after("-5") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("") is None


def test_exhausted_attempts_are_server_unreachable_with_count_and_text(stub: Stub, waits: list[float]) -> None:
    """Verify that endless 500s stop after the attempt limit: exit 4, the attempts counted, the server's text."""
    stub.routes["GET /fhir/metadata"] = Reply(500, outcome("database on fire"))
    with _client(stub, waits) as client, pytest.raises(ServerUnreachableError) as err:
        client.get_json("metadata")
    assert err.value.exit_code == ExitCode.SERVER_UNREACHABLE == 4
    assert len(stub.seen) == 4 and len(waits) == 3
    assert "after 4 attempt(s)" in err.value.message
    assert "HTTP 500" in err.value.message and "database on fire" in err.value.message


def test_attempt_limit_of_one_never_retries(stub: Stub, waits: list[float]) -> None:
    """Verify that a policy of one attempt sends exactly one request and never waits."""
    stub.routes["GET /fhir/metadata"] = Reply(503)
    client = _client(stub, waits, retry=RetryPolicy(attempts=1))
    with pytest.raises(ServerUnreachableError, match=r"after 1 attempt\(s\)"):
        client.get_json("metadata")
    assert len(stub.seen) == 1 and waits == []


def test_retry_after_beyond_the_budget_ends_the_retries(stub: Stub, waits: list[float]) -> None:
    """Verify that a Retry-After longer than the remaining time budget stops at once instead of waiting."""
    stub.routes["GET /fhir/metadata"] = Reply(503, headers={"Retry-After": "3600"})
    client = _client(stub, waits, retry=RetryPolicy(attempts=5, total_budget_s=5))
    with pytest.raises(ServerUnreachableError, match="HTTP 503"):
        client.get_json("metadata")
    assert len(stub.seen) == 1 and waits == []


def test_time_budget_bounds_the_whole_call(stub: Stub) -> None:
    """Verify that the total budget, real waits included, ends the retries before the attempt limit."""
    stub.routes["GET /fhir/metadata"] = Reply(503)
    policy = RetryPolicy(attempts=1000, base_delay_s=0.05, max_delay_s=0.05, total_budget_s=0.4)
    client = Client(f"{stub.url}/fhir", retry=policy)  # real sleep: the budget counts real time
    start = time.monotonic()
    with pytest.raises(ServerUnreachableError) as err:
        client.get_json("metadata")
    assert time.monotonic() - start < 1.5
    assert 2 <= len(stub.seen) < 1000
    assert f"after {len(stub.seen)} attempt(s)" in err.value.message


def test_connection_refused_is_retried_then_unreachable(waits: list[float]) -> None:
    """Verify that a refused connection is a transport error: retried, then exit 4 naming it and the URL."""
    client = Client(f"http://127.0.0.1:{free_port()}/fhir", retry=FAST, sleep=waits.append)
    with pytest.raises(ServerUnreachableError) as err:
        client.get_json("metadata")
    assert client.requests_sent == 4 and len(waits) == 3
    assert "ConnectionError" in err.value.message and "/fhir/metadata" in err.value.message


def test_connection_reset_is_retried(stub: Stub, waits: list[float]) -> None:
    """Verify that a connection closed without an answer is retried like any transport error."""
    stub.routes["POST /fhir"] = [Reply(reset=True), Reply(200, {"resourceType": "Bundle", "type": "batch-response"})]
    with _client(stub, waits) as client:
        assert client.post_json("", {"resourceType": "Bundle", "type": "batch"})["type"] == "batch-response"
    assert len(stub.seen) == 2 and len(waits) == 1


def test_read_timeout_is_retried_then_unreachable(stub: Stub, waits: list[float]) -> None:
    """Verify that a read timeout counts as a transport error: retried, then ServerUnreachableError naming it."""
    stub.routes["GET /fhir/metadata"] = Reply(200, {}, stall_s=0.5)
    client = _client(stub, waits, retry=RetryPolicy(attempts=2, base_delay_s=0.01), timeouts=Timeouts(1, 0.1))
    with pytest.raises(ServerUnreachableError) as err:
        client.get_json("metadata")
    assert "ReadTimeout" in err.value.message
    assert len(stub.seen) == 2 and len(waits) == 1


@pytest.mark.parametrize(
    ("status", "cls", "hint"),
    [
        (400, ServerRejectedError, ""),
        (401, ForbiddenError, "--token-file"),
        (403, ForbiddenError, "not allowed"),
        (404, NotFoundError, "check the server base URL"),
        (410, NotFoundError, ""),
        (412, PreconditionFailedError, ""),
        (422, ServerRejectedError, ""),
    ],
)
def test_other_4xx_fail_fast_with_typed_errors(
    stub: Stub, waits: list[float], status: int, cls: type[ServerRejectedError], hint: str
) -> None:
    """Verify that other 4xx are not retried and raise the typed error with status, outcome and its text."""
    body = outcome(f"the server says no ({status})")
    stub.routes["PUT /fhir/Library/x"] = Reply(status, body)
    client = _client(stub, waits)
    with pytest.raises(ServerRejectedError) as err:
        client.request("PUT", "Library/x", json_body={"resourceType": "Library", "id": "x"})
    assert type(err.value) is cls
    assert err.value.exit_code == ExitCode.SERVER_REJECTED
    assert err.value.status == status and err.value.outcome == body
    assert f"PUT {stub.url}/fhir/Library/x failed with HTTP {status}" in err.value.message
    assert f"error: the server says no ({status})" in err.value.message
    assert hint in err.value.message
    assert len(stub.seen) == 1 and waits == []


def test_rejection_without_an_outcome_keeps_status_and_no_outcome(stub: Stub, waits: list[float]) -> None:
    """Verify that a refusal whose body is not an OperationOutcome still has its status, and outcome None."""
    stub.routes["GET /fhir/Patient/p"] = Reply(404, b"<html>nope</html>", {"Content-Type": "text/html"})
    with pytest.raises(NotFoundError) as err:
        _client(stub, waits).get_json("Patient/p")
    assert err.value.status == 404 and err.value.outcome is None
    assert err.value.message.endswith("failed with HTTP 404 (not found: check the server base URL)")


def test_outcome_text_falls_back_to_details_and_code(stub: Stub, waits: list[float]) -> None:
    """Verify that issues without diagnostics are described by details.text, else by their code."""
    body = {
        "resourceType": "OperationOutcome",
        "issue": [
            {"severity": "error", "code": "invalid", "details": {"text": "bad reference"}},
            {"severity": "warning", "code": "business-rule"},
        ],
    }
    stub.routes["POST /fhir"] = Reply(422, body)
    with pytest.raises(ServerRejectedError) as err:
        _client(stub, waits).post_json("", {"resourceType": "Bundle"})
    assert "error: bad reference; warning: business-rule" in err.value.message


def test_unexpected_success_status_is_a_rejection(stub: Stub, waits: list[float]) -> None:
    """Verify that a status outside `ok` (here 204 for a read) is refused at once, not retried."""
    stub.routes["GET /fhir/Patient/p"] = Reply(204)
    with pytest.raises(ServerRejectedError, match="HTTP 204") as err:
        _client(stub, waits).get_json("Patient/p")
    assert err.value.status == 204 and len(stub.seen) == 1


def test_non_json_answer_is_a_clear_rejection(stub: Stub, waits: list[float]) -> None:
    """Verify that a 200 with HTML is reported with its content type and a snippet, not a traceback."""
    stub.routes["GET /fhir/metadata"] = Reply(200, b"<html>\nmaintenance</html>", {"Content-Type": "text/html"})
    with pytest.raises(ServerRejectedError) as err:
        _client(stub, waits).get_json("metadata")
    assert "non-JSON content (text/html)" in err.value.message and "maintenance" in err.value.message
    assert err.value.status == 200


def test_accept_and_content_type_headers(stub: Stub, waits: list[float]) -> None:
    """Verify that every request asks for FHIR JSON and a JSON body says its content type."""
    stub.routes["GET /fhir/Patient/p"] = OK
    stub.routes["POST /fhir"] = OK
    stub.routes["POST /cds-services/x"] = OK
    with _client(stub, waits) as client:
        client.get_json("Patient/p")
        client.post_json("", {"resourceType": "Bundle"})
        client.post_json(f"{stub.url}/cds-services/x", {"hook": "patient-view"}, content_type="application/json")
    assert all(s.headers["Accept"] == FHIR_JSON for s in stub.seen)
    assert "Content-Type" not in stub.seen[0].headers
    assert stub.seen[1].headers["Content-Type"] == FHIR_JSON
    assert stub.seen[2].headers["Content-Type"] == "application/json"
    assert stub.seen[1].json() == {"resourceType": "Bundle"}


def test_cache_control_is_dropped_only_for_cached_reads(stub: Stub, waits: list[float]) -> None:
    """Verify that searches ask for fresh results and `cached` reads do not send no-cache."""
    stub.routes["GET /fhir/metadata"] = OK
    with _client(stub, waits) as client:
        client.get_json("metadata")
        client.get_json("metadata", cached=True)
    assert stub.seen[0].headers.get("Cache-Control") == "no-cache"
    assert "Cache-Control" not in stub.seen[1].headers


def test_params_and_absolute_urls(stub: Stub, waits: list[float]) -> None:
    """Verify that params are sent as the query and an absolute URL is used as it is."""
    stub.routes["GET /fhir/Library"] = OK
    stub.routes["GET /other/Library"] = OK
    with _client(stub, waits) as client:
        client.get_json("/Library", params={"url": "http://x|1"})
        client.get_json(f"{stub.url}/other/Library")
    assert stub.seen[0].query == {"url": ["http://x|1"]}
    assert stub.seen[1].path == "/other/Library"


def test_bearer_token_is_sent_and_never_shown(stub: Stub, waits: list[float], caplog: pytest.LogCaptureFixture) -> None:
    """Verify that the token goes out as `Authorization: Bearer` and never into reprs, errors or logs."""
    caplog.set_level(logging.DEBUG)
    stub.routes["GET /fhir/Patient/p"] = [Reply(503), Reply(401, outcome("invalid token"))]
    client = _client(stub, waits, token=TOKEN)
    with pytest.raises(ForbiddenError) as rejected:
        client.get_json("Patient/p")
    stub.routes["GET /fhir/metadata"] = Reply(500, outcome("down"))
    with pytest.raises(ServerUnreachableError) as unreachable:
        client.get_json("metadata")
    assert all(s.headers["Authorization"] == f"Bearer {TOKEN}" for s in stub.seen)
    texts = [
        repr(client),
        str(client.__dict__),
        repr(client.session.auth),
        repr(client.session.__dict__),
        str(rejected.value),
        repr(rejected.value),
        str(unreachable.value),
        *(r.getMessage() for r in caplog.records),
    ]
    assert caplog.records, "the client logs its requests and retries"
    for text in texts:
        assert TOKEN not in text
    assert "bearer token" in repr(client)


def test_no_token_no_authorization_header(stub: Stub, waits: list[float]) -> None:
    """Verify that without a token no Authorization header is sent."""
    stub.routes["GET /fhir/metadata"] = OK
    _client(stub, waits).get_json("metadata")
    assert "Authorization" not in stub.seen[0].headers


def test_read_token_from_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Verify that the token is the file's first line, else GUIDELINE_TOKEN, else None; the file wins."""
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert read_token(None) is None
    monkeypatch.setenv(TOKEN_ENV, "  env-token \n")
    assert read_token(None) == "env-token"
    f = tmp_path / "token"
    f.write_text(f"\n{TOKEN}\nsecond line\n", encoding="utf-8")
    assert read_token(f) == TOKEN
    monkeypatch.setenv(TOKEN_ENV, "   ")
    assert read_token(None) is None


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read token file"),
        (b"", "is empty"),
        (b"  \n\n", "is empty"),
        (b"\xff\xfe\x00t", "is not UTF-8"),
        (f"Bearer {TOKEN}".encode(), "spaces or control characters"),
        (f"{TOKEN}\x07".encode(), "spaces or control characters"),
    ],
)
def test_bad_token_files_are_clear_errors(tmp_path: Path, content: bytes | None, expected: str) -> None:
    """Verify that a missing, empty, binary or malformed token file is a bad-input error that hides the token."""
    f = tmp_path / "token"
    if content is not None:
        f.write_bytes(content)
    with pytest.raises(BadInputError) as err:
        read_token(f)
    assert expected in err.value.message and str(f) in err.value.message
    assert err.value.exit_code == ExitCode.BAD_INPUT
    assert TOKEN not in err.value.message


def test_token_file_that_is_a_directory(tmp_path: Path) -> None:
    """Verify that a directory given as the token file is a clear error, not a traceback."""
    with pytest.raises(BadInputError, match="cannot read token file"):
        read_token(tmp_path)


def test_malformed_environment_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Verify that GUIDELINE_TOKEN with inner spaces is refused, naming the variable and not the value."""
    monkeypatch.setenv(TOKEN_ENV, f"Bearer {TOKEN}")
    with pytest.raises(BadInputError) as err:
        read_token(None)
    assert TOKEN_ENV in err.value.message and TOKEN not in err.value.message


def test_tls_verification_is_on_unless_insecure() -> None:
    """Verify that the session verifies certificates by default and skips it only when asked."""
    assert Client("https://fhir.example/fhir").session.verify is True
    assert Client("https://fhir.example/fhir", verify_tls=False).session.verify is False


def test_tls_failure_is_not_retried(stub: Stub, waits: list[float]) -> None:
    """Verify that a TLS failure (here: https to a plain-HTTP port) fails at once with a pointer to --insecure."""
    client = Client(stub.url.replace("http://", "https://") + "/fhir", retry=FAST, sleep=waits.append)
    with pytest.raises(ServerUnreachableError) as err:
        client.get_json("metadata")
    assert "TLS verification failed" in err.value.message and "--insecure" in err.value.message
    assert client.requests_sent == 1 and waits == []


def test_base_url_must_be_http() -> None:
    """Verify that a server URL without http(s):// is a usage error, and a trailing slash is dropped."""
    with pytest.raises(UsageError, match="must start with http"):
        Client("127.0.0.1:8080/fhir")
    assert Client("http://h/fhir/").base_url == "http://h/fhir"


def test_same_origin() -> None:
    """Verify that next links and templates count as same-origin only with the base's scheme, host and port."""
    client = Client("https://fhir.example/fhir", token=TOKEN)
    assert client.same_origin("https://fhir.example/fhir?_getpages=x")
    assert client.same_origin("Library?url=x")
    assert client.same_origin("https://FHIR.example:443/other")  # default port, host case
    assert not client.same_origin("http://fhir.example/fhir")  # scheme differs
    assert not client.same_origin("https://fhir.example:8443/fhir")
    assert not client.same_origin("https://elsewhere.example/fhir")
    assert Client("http://h:8080/fhir").same_origin("http://h:8080/x")
    assert not Client("http://h:8080/fhir").same_origin("http://h/x")


def test_an_invalid_url_is_a_usage_error(waits: list[float]) -> None:
    """Verify that a URL requests cannot use (port out of range) is a usage error, not a traceback or retry."""
    client = Client("http://127.0.0.1:99999/fhir", retry=FAST, sleep=waits.append)
    with pytest.raises(UsageError, match="is not a valid URL"):
        client.get_json("metadata")
    assert waits == []


def test_a_redirect_loop_is_a_rejection(stub: Stub, waits: list[float]) -> None:
    """Verify that endless redirects fail at once as a rejection naming the problem."""
    stub.routes["GET /fhir/metadata"] = Reply(302, headers={"Location": f"{stub.url}/fhir/metadata"})
    with pytest.raises(ServerRejectedError, match="TooManyRedirects"):
        _client(stub, waits).get_json("metadata")
    assert waits == []


def test_redirects_to_another_origin_do_not_carry_the_token(stub: Stub, waits: list[float]) -> None:
    """Verify that a redirect to another host or port is followed without the Authorization header."""
    with stub_server({"GET /fhir/metadata": OK}) as other:
        stub.routes["GET /fhir/metadata"] = Reply(307, headers={"Location": f"{other.url}/fhir/metadata"})
        _client(stub, waits, token=TOKEN).get_json("metadata")
    assert stub.seen[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert "Authorization" not in other.seen[0].headers


def test_cds_service_401_names_the_jwt_flags_and_the_services_reason(stub: Stub, waits: list[float]) -> None:
    """Verify that a CDS service's 401 carries its `{"error"}` text and points at --jwt-key, not --token-file."""
    stub.routes["POST /cds-services/gl-treatment"] = Reply(401, {"error": "unauthorized: no bearer token"})
    client = _client(stub, waits)
    with pytest.raises(ForbiddenError) as err:
        client.request("POST", f"{stub.url}/cds-services/gl-treatment", json_body={"hook": "patient-view"})
    assert "HTTP 401: unauthorized: no bearer token" in err.value.message
    assert "--jwt-key" in err.value.message and "--token-file" not in err.value.message
