"""Verify publish/apply/cds clients: retries, timeouts, auth secrecy, dry runs and clear errors, via a fault proxy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from guideline.cli import main as cli
from guideline.content.cql import Engine
from guideline.content.outputs import build
from guideline.core.config import Config
from guideline.core.errors import ExitCode, ServerRejectedError, ServerUnreachableError
from guideline.remote.http import Client, RetryPolicy, Timeouts, parse_retry_after
from tests.support.faultproxy import Fault, Plan, fault_proxy, outcome
from tests.support.netutil import free_port

pytestmark = pytest.mark.server

TOKEN = "s3cr3t-TOKEN-do-not-print-4711"  # noqa: S105 - a fake token the tests look for in output


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory, config: Config, engine: Engine) -> Path:
    out = tmp_path_factory.mktemp("dist") / "dist"
    build(out, config, engine)
    return out / "bundle.json"


@pytest.fixture(scope="module")
def upstream(server_url: str) -> str:
    return server_url.rsplit("/fhir", 1)[0]


def test_parse_retry_after_forms() -> None:
    """Verify that Retry-After is read as delta-seconds and as an HTTP-date, and garbage is ignored."""
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 25 Nov 2026 00:00:10 GMT", now=1795564800.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_503_with_retry_after_then_success(upstream: str) -> None:
    """Verify that 503 + Retry-After is retried after exactly the advertised wait, then succeeds."""
    waits: list[float] = []
    plan = Plan(faults=[Fault(503, {"Retry-After": "2"}, outcome("busy")), Fault(503, {"Retry-After": "1"})])
    with fault_proxy(upstream, plan) as proxy, Client(f"{proxy}/fhir", sleep=waits.append) as client:
        cs = client.get_json("metadata")
    assert cs["fhirVersion"] == "4.0.1"
    assert waits == [2.0, 1.0]
    assert len(plan.seen) == 3


def test_endless_500_fails_within_bound_with_server_text(upstream: str) -> None:
    """Verify that endless 500s stop after the retry budget with the server's OperationOutcome text."""
    waits: list[float] = []
    plan = Plan(then=Fault(500, {"Content-Type": "application/fhir+json"}, outcome("database on fire")))
    with fault_proxy(upstream, plan) as proxy:
        client = Client(f"{proxy}/fhir", retry=RetryPolicy(attempts=4, base_delay_s=0.2), sleep=waits.append)
        with pytest.raises(ServerUnreachableError) as err:
            client.get_json("metadata")
    assert len(plan.seen) == 4 and len(waits) == 3
    assert all(w <= 0.2 * 2**i for i, w in enumerate(waits))  # exponential backoff with jitter
    assert "HTTP 500" in err.value.message and "database on fire" in err.value.message


def test_total_budget_bounds_the_retries(upstream: str) -> None:
    """Verify that a Retry-After longer than the remaining budget ends the retries instead of waiting."""
    plan = Plan(then=Fault(503, {"Retry-After": "3600"}))
    with fault_proxy(upstream, plan) as proxy:
        client = Client(f"{proxy}/fhir", retry=RetryPolicy(attempts=5, total_budget_s=5), sleep=lambda s: None)
        with pytest.raises(ServerUnreachableError):
            client.get_json("metadata")
    assert len(plan.seen) == 1


def test_read_timeout_is_retried_then_reported(upstream: str) -> None:
    """Verify that a read timeout counts as a transport error, is retried, and is named in the error."""
    plan = Plan(then=Fault(200, stall_s=2.0, body=b"{}"))
    with fault_proxy(upstream, plan) as proxy:
        client = Client(
            f"{proxy}/fhir",
            timeouts=Timeouts(connect_s=1, read_s=0.3),
            retry=RetryPolicy(attempts=2, base_delay_s=0.01),
            sleep=lambda s: None,
        )
        with pytest.raises(ServerUnreachableError) as err:
            client.get_json("metadata")
    assert "ReadTimeout" in err.value.message
    assert len(plan.seen) == 2


def test_connection_refused_exits_4(bundle_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that publishing to a port nobody listens on exits 4 with a clear message and no traceback."""
    rc = cli.main(["publish", str(bundle_path), "--server", f"http://127.0.0.1:{free_port()}/fhir"])
    err = capsys.readouterr().err
    assert rc == ExitCode.SERVER_UNREACHABLE
    assert "did not answer successfully" in err and "ConnectionError" in err
    assert "Traceback" not in err


def test_wrong_token_401_is_clear_and_secret(
    upstream: str, bundle_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Verify that a 401 names the problem, the token is sent as a bearer header, and never printed."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    plan = Plan(then=Fault(401, {"Content-Type": "application/fhir+json"}, outcome("invalid token")))
    with fault_proxy(upstream, plan) as proxy:
        rc = cli.main(["publish", str(bundle_path), "--server", f"{proxy}/fhir", "--token-file", str(token_file)])
    out = capsys.readouterr()
    assert rc == ExitCode.SERVER_REJECTED
    assert "HTTP 401" in out.err and "invalid token" in out.err and "--token-file" in out.err
    assert TOKEN not in out.err + out.out
    assert plan.seen[0]["Authorization"] == f"Bearer {TOKEN}"


def test_token_from_environment_is_never_in_reprs_or_errors(
    upstream: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Verify that GUIDELINE_TOKEN is used, and neither the client, its session nor errors reveal it."""
    monkeypatch.setenv("GUIDELINE_TOKEN", TOKEN)
    plan = Plan(then=Fault(403, {}, outcome("forbidden")))
    with fault_proxy(upstream, plan) as proxy:
        rc = cli.main(["cds", "services", "--server", f"{proxy}/fhir"])
        from guideline.remote.http import read_token

        client = Client(f"{proxy}/fhir", token=read_token(None))
        with pytest.raises(ServerRejectedError) as err:
            client.get_json("metadata")
    out = capsys.readouterr()
    assert rc == ExitCode.SERVER_REJECTED
    assert plan.seen[0]["Authorization"] == f"Bearer {TOKEN}"
    for text in (out.err, out.out, str(err.value), repr(client.session.auth), repr(client.session.__dict__)):
        assert TOKEN not in text


def test_publish_refuses_invalid_content_before_contacting_the_server(
    bundle_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Verify that an invalid bundle is refused with exit 1 and the server is never contacted."""
    bundle = json.loads(bundle_path.read_text(encoding="utf-8"))
    plan = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "PlanDefinition")
    plan["status"] = "bogus"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(bundle), encoding="utf-8")
    rc = cli.main(["publish", str(bad), "--server", f"http://127.0.0.1:{free_port()}/fhir"])
    err = capsys.readouterr().err
    assert rc == ExitCode.INVALID_CONTENT
    assert "validation errors" in err and "status" in err


def test_dry_run_writes_nothing(server_url: str, bundle_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that --dry-run reports the plan as JSON and changes nothing on the server."""
    rc = cli.main(["publish", str(bundle_path), "--server", server_url, "--dry-run", "--json"])
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert report["dryRun"] is True and report["writes"] == 0
    assert sum(report["summary"].values()) == len(json.loads(bundle_path.read_text())["entry"])


def test_non_json_cds_discovery_is_a_clear_error(upstream: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that a CDS endpoint answering HTML gets a clear error naming the content type."""
    plan = Plan(then=Fault(200, {"Content-Type": "text/html"}, b"<html>maintenance</html>"))
    with fault_proxy(upstream, plan) as proxy:
        rc = cli.main(["cds", "services", "--server", f"{proxy}/fhir"])
    err = capsys.readouterr().err
    assert rc == ExitCode.SERVER_REJECTED
    assert "non-JSON" in err and "text/html" in err


def test_malformed_cds_response_is_a_clear_error(upstream: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that a CDS call answer without a cards list is reported as malformed."""
    plan = Plan(then=Fault(200, {"Content-Type": "application/json"}, b'{"cardz": []}'))
    with fault_proxy(upstream, plan) as proxy:
        rc = cli.main(["cds", "call", "--server", f"{proxy}/fhir", "--service", "GLR4Diet", "--patient", "x"])
    err = capsys.readouterr().err
    assert rc == ExitCode.SERVER_REJECTED
    assert "without a 'cards' list" in err


def test_server_rejects_non_r4(upstream: str, bundle_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that a server whose CapabilityStatement is not FHIR 4.0.x is refused before any write."""
    cs = json.dumps(
        {
            "resourceType": "CapabilityStatement",
            "fhirVersion": "5.0.0",
            "rest": [{"interaction": [{"code": "transaction"}]}],
        }
    ).encode()
    plan = Plan(then=Fault(200, {"Content-Type": "application/fhir+json"}, cs))
    with fault_proxy(upstream, plan) as proxy:
        rc = cli.main(["publish", str(bundle_path), "--server", f"{proxy}/fhir"])
    err = capsys.readouterr().err
    assert rc == ExitCode.SERVER_REJECTED
    assert "FHIR 5.0.0" in err
    assert [s["method"] for s in plan.seen] == ["GET"]


def test_capability_check_asks_for_a_subset_then_the_whole_statement_when_needed(
    upstream: str, bundle_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Verify the CapabilityStatement is read subsetted and cacheable, and whole if the subset lacks a checked part."""
    subset = json.dumps(
        {
            "resourceType": "CapabilityStatement",
            "meta": {
                "tag": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}]
            },
            "fhirVersion": "4.0.1",
        }
    ).encode()
    # The first answer is a subset without `rest` (a server that cannot subset nested elements);
    # everything after it goes to the real server.
    plan = Plan(faults=[Fault(200, {"Content-Type": "application/fhir+json"}, subset)])
    with fault_proxy(upstream, plan) as proxy:
        rc = cli.main(["publish", str(bundle_path), "--server", f"{proxy}/fhir", "--dry-run"])
    assert rc == 0, capsys.readouterr().err
    first, second = plan.seen[0], plan.seen[1]
    assert first["path"].startswith("/fhir/metadata?_elements=")
    assert second["path"] == "/fhir/metadata"
    # HAPI rebuilds its 1.5 MB statement on no-cache; searches still ask for fresh results.
    assert "no-cache" not in {first.get("Cache-Control"), second.get("Cache-Control")}
    assert all(s.get("Cache-Control") == "no-cache" for s in plan.seen[2:])


def test_next_links_to_another_origin_are_not_followed() -> None:
    """Verify a search page whose next link names another host is refused (the token would go there)."""
    from guideline.remote.publish import _search_results

    entry = {
        "response": {"status": "200 OK"},
        "resource": {
            "resourceType": "Bundle",
            "entry": [{"resource": {"resourceType": "Library", "id": "a"}}],
            "link": [{"relation": "next", "url": "https://elsewhere.example/fhir?_getpages=x"}],
        },
    }
    with Client("https://fhir.example/fhir", token=TOKEN) as client:
        assert client.same_origin("https://fhir.example/fhir?_getpages=x")
        assert client.same_origin("Library?url=x")
        assert client.same_origin("https://FHIR.example:443/fhir")  # default port, host case
        assert not client.same_origin("http://fhir.example/fhir")  # scheme differs
        assert not client.same_origin("https://fhir.example:8443/fhir")
        with pytest.raises(ServerRejectedError, match="another origin"):
            _search_results(client, entry, "Library resources by url|version")
        assert client.requests_sent == 0
