"""Verify the Bulk Data export client against a local stub: the query, polling, resumable downloads, the manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from guideline.cli import main as cli
from guideline.core.errors import BadInputError, ExitCode, ServerRejectedError, ServerUnreachableError, UsageError
from guideline.evaluation import spark
from guideline.remote import bulk_export as bx
from guideline.remote.http import Client, RetryPolicy
from tests.unit.remote.stub import Reply, Seen, Stub, outcome

TOKEN = "bulk-UNIT-token-0815"  # noqa: S105 - a fake token the tests look for
FAST = RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.02, total_budget_s=5)
LOINC = "http://loinc.org"
VS = "http://example.org/ValueSet/tg"
VALUE_SETS = {VS: {"1.0": [{"system": LOINC, "code": "2571-8"}, {"system": LOINC, "code": "3043-7"}]}}
REQS: list[dict[str, Any]] = [
    {"type": "Observation", "codeFilter": [{"path": "code", "valueSet": VS}]},
    {"type": "Observation", "codeFilter": [{"path": "code", "code": [{"system": LOINC, "code": "2842-3"}]}]},
    {"type": "Condition", "codeFilter": [{"path": "code", "valueSet": VS}]},
    {"type": "Condition"},
    {"type": "MedicationRequest", "codeFilter": [{"path": "medication", "valueSet": VS}]},
    {"type": "Medication"},
    {"type": "Patient"},
]
PATIENT = {"resourceType": "Patient", "id": "p1"}
OBS = {"resourceType": "Observation", "id": "o1", "subject": {"reference": "Patient/p1"}}
MEDREQ = {
    "resourceType": "MedicationRequest",
    "id": "m1",
    "subject": {"reference": "Patient/p1"},
    "medicationReference": {"reference": "Medication/med-1"},
}


def _ndjson(*resources: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in resources)


def _client(stub: Stub, token: str | None = TOKEN) -> Client:
    return Client(f"{stub.url}/fhir", token=token, retry=FAST, sleep=lambda s: None)


def _policy(waits: list[float], **kw: Any) -> bx.PollPolicy:
    return bx.PollPolicy(sleep=waits.append, clock=lambda: sum(waits), **kw)


def test_query_expands_value_sets_and_keeps_unfiltered_types_whole() -> None:
    """Verify that codes and value sets become one code= filter per type, and one unfiltered retrieve wins."""
    q = bx.export_query(REQS, VALUE_SETS)
    assert q.types == ("Condition", "Medication", "MedicationRequest", "Observation", "Patient")
    # Condition has an unfiltered retrieve, MedicationRequest filters on `medication` (no exact search
    # parameter: medicationReference would be missed): both are exported whole.
    assert q.type_filters == (f"Observation?code={LOINC}|2571-8,{LOINC}|2842-3,{LOINC}|3043-7",)


def test_query_escapes_search_separators_in_codes() -> None:
    """Verify that a code holding a comma or a bar is escaped (FHIR search), not split into two codes."""
    req = {"type": "Condition", "codeFilter": [{"path": "code", "code": [{"system": "urn:x", "code": "a,b|c"}]}]}
    assert bx.export_query([req], {}).type_filters == ("Condition?code=urn:x|a\\,b\\|c",)


def test_query_leaves_a_type_whole_when_its_value_set_cannot_be_expanded() -> None:
    """Verify that a value set the package has no expansion for is never sent as a filter that would lose data."""
    q = bx.export_query([{"type": "Observation", "codeFilter": [{"path": "code", "valueSet": "http://x/vs"}]}], {})
    assert q.types == ("Observation",)
    assert q.type_filters == ()


def test_kick_off_sends_type_type_filter_and_prefer(stub: Stub) -> None:
    """Verify the system kick-off: GET $export with _type, each _typeFilter, _since and Prefer: respond-async."""
    stub.routes["GET /fhir/$export"] = Reply(202, headers={"Content-Location": f"{stub.url}/fhir/status/1"})
    req = bx.ExportRequest(bx.export_query(REQS, VALUE_SETS), since="2026-01-01T00:00:00Z")
    with _client(stub) as c:
        assert bx.kick_off(c, req) == f"{stub.url}/fhir/status/1"
    seen = stub.seen[0]
    assert seen.headers["Prefer"] == "respond-async"
    assert seen.query["_type"] == ["Condition,Medication,MedicationRequest,Observation,Patient"]
    assert seen.query["_typeFilter"] == [f"Observation?code={LOINC}|2571-8,{LOINC}|2842-3,{LOINC}|3043-7"]
    assert seen.query["_since"] == ["2026-01-01T00:00:00Z"]
    assert seen.query["_outputFormat"] == ["application/fhir+ndjson"]


def test_group_and_patient_kick_offs_leave_out_types_outside_the_compartment(stub: Stub) -> None:
    """Verify Group/ID/$export and the Patient POST: Medication is not asked for (fetched afterwards)."""
    stub.routes["GET /fhir/Group/g1/$export"] = Reply(202, headers={"Content-Location": "status/g"})
    stub.routes["POST /fhir/Patient/$export"] = Reply(202, headers={"Content-Location": "status/p"})
    q = bx.export_query(REQS, VALUE_SETS)
    with _client(stub) as c:
        assert bx.kick_off(c, bx.ExportRequest(q, group="g1")).endswith("/fhir/status/g")
        bx.kick_off(c, bx.ExportRequest(q, patients=("a", "b")))
    assert stub.seen[0].query["_type"] == ["Condition,MedicationRequest,Observation,Patient"]
    params = stub.seen[1].json()["parameter"]
    assert [p["valueReference"]["reference"] for p in params if p["name"] == "patient"] == ["Patient/a", "Patient/b"]
    assert {"name": "_type", "valueString": "Condition,MedicationRequest,Observation,Patient"} in params
    assert bx.ExportRequest(q, group="g1").later_types == ("Medication",)


def test_kick_off_refusal_carries_the_operation_outcome(stub: Stub) -> None:
    """Verify that a refused kick-off is exit 5 with the server's OperationOutcome text."""
    stub.routes["GET /fhir/$export"] = Reply(400, outcome("HAPI-0512: Resource types [Medication] are invalid"))
    with _client(stub) as c, pytest.raises(ServerRejectedError) as e:
        bx.kick_off(c, bx.ExportRequest(bx.export_query(REQS, VALUE_SETS)))
    assert "HAPI-0512" in e.value.message
    assert e.value.exit_code == ExitCode.SERVER_REJECTED


def _manifest(stub: Stub, token: bool = True, **counts: int) -> dict[str, Any]:
    return {
        "transactionTime": "2026-12-07T10:00:00Z",
        "request": f"{stub.url}/fhir/$export",
        "requiresAccessToken": token,
        "output": [
            {
                "type": "Patient",
                "url": f"{stub.url}/fhir/Binary/b1",
                **({"count": counts["p"]} if "p" in counts else {}),
            },
            {"type": "Observation", "url": f"{stub.url}/fhir/Binary/b2"},
        ],
        "error": [],
    }


def test_poll_honours_retry_after_then_backs_off_until_complete(stub: Stub, waits: list[float]) -> None:
    """Verify 202 → 200: Retry-After is waited (capped), no Retry-After doubles the wait, the manifest is returned."""
    stub.routes["GET /fhir/status/1"] = [
        Reply(202, headers={"Retry-After": "3", "X-Progress": "50%"}),
        Reply(202, headers={"Retry-After": "120"}),
        Reply(202),
        Reply(202),
        Reply(200, _manifest(stub)),
    ]
    lines: list[str] = []
    with _client(stub) as c:
        m = bx.poll(c, f"{stub.url}/fhir/status/1", _policy(waits, max_interval_s=30), lines.append)
    assert m["transactionTime"] == "2026-12-07T10:00:00Z"
    assert waits == [3, 30, 4, 8]
    assert "50%" in lines[0]


def test_poll_failed_export_is_rejected_with_its_outcome(stub: Stub, waits: list[float]) -> None:
    """Verify that a 500 with an OperationOutcome is the export's failure (exit 5, its text), not retried."""
    stub.routes["GET /fhir/status/1"] = Reply(500, outcome("Job failed: disk full"))
    with _client(stub) as c, pytest.raises(ServerRejectedError) as e:
        bx.poll(c, f"{stub.url}/fhir/status/1", _policy(waits))
    assert "disk full" in e.value.message
    assert len(stub.seen) == 1


def test_poll_transient_500_and_deadline(stub: Stub, waits: list[float]) -> None:
    """Verify that a bare 500 is polled again and that a job running past --max-wait is exit 4, resumable."""
    stub.routes["GET /fhir/status/1"] = [Reply(500), Reply(202, headers={"Retry-After": "10"})]
    with _client(stub) as c, pytest.raises(ServerUnreachableError) as e:
        bx.poll(c, f"{stub.url}/fhir/status/1", _policy(waits, max_wait_s=25, max_interval_s=10))
    assert "rerun the same command" in e.value.message
    assert e.value.exit_code == ExitCode.SERVER_UNREACHABLE
    assert waits == [1, 10, 10]


def test_poll_of_a_forgotten_export_says_to_export_again(stub: Stub, waits: list[float]) -> None:
    """Verify that a status URL the server no longer knows (404, e.g. on a late resume) says what to do."""
    with _client(stub) as c, pytest.raises(ServerRejectedError, match="export again"):
        bx.poll(c, f"{stub.url}/fhir/status/gone", _policy(waits))


def _files(stub: Stub, bodies: dict[str, bytes], ranges: bool = True) -> None:
    """Serve `bodies` at /fhir/Binary/<id>, honouring Range when `ranges`."""

    def respond(req: Seen) -> Reply:
        body = bodies.get(req.path.rsplit("/", 1)[-1])
        if body is None or not req.path.startswith("/fhir/Binary/"):
            return Reply(404, outcome("no such file"))
        rng = req.headers.get("Range")
        if ranges and rng:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            if start >= len(body):
                return Reply(416)
            return Reply(206, body[start:], {"Content-Type": "application/fhir+ndjson"})
        return Reply(200, body, {"Content-Type": "application/fhir+ndjson"})

    stub.respond = respond


@pytest.mark.parametrize("ranges", [True, False])
def test_download_completes_a_partial_file(stub: Stub, tmp_path: Path, ranges: bool) -> None:
    """Verify that a .part is continued with Range (206), or fetched again whole when Range is ignored."""
    body = _ndjson(OBS, {**OBS, "id": "o2"})
    _files(stub, {"b1": _ndjson(PATIENT), "b2": body}, ranges=ranges)
    (tmp_path / "Observation.1.ndjson.part").write_bytes(body[:17])
    with _client(stub) as c:
        files = bx.download(c, _manifest(stub), tmp_path)
    assert [(f.name, f.count) for f in files] == [("Patient.1.ndjson", 1), ("Observation.1.ndjson", 2)]
    assert (tmp_path / "Observation.1.ndjson").read_bytes() == body
    obs = [s for s in stub.seen if s.path.endswith("/b2")][0]
    assert obs.headers.get("Range") == "bytes=17-"
    assert obs.headers["Accept"] == "application/fhir+ndjson"
    assert obs.headers["Accept-Encoding"] == "identity"


def test_download_sends_the_token_only_when_required(stub: Stub, tmp_path: Path) -> None:
    """Verify that requiresAccessToken decides whether the bearer token goes with each file request."""
    _files(stub, {"b1": _ndjson(PATIENT), "b2": _ndjson(OBS)})
    with _client(stub) as c:
        bx.download(c, _manifest(stub, token=True), tmp_path / "a")
        bx.download(c, _manifest(stub, token=False), tmp_path / "b")
    auth = [s.headers.get("Authorization") for s in stub.seen]
    assert auth == [f"Bearer {TOKEN}"] * 2 + [None] * 2


def test_download_refuses_a_count_mismatch(stub: Stub, tmp_path: Path) -> None:
    """Verify that a file with fewer lines than the manifest's count is exit 5 and removed for a refetch."""
    _files(stub, {"b1": _ndjson(PATIENT), "b2": _ndjson(OBS)})
    with _client(stub) as c, pytest.raises(ServerRejectedError) as e:
        bx.download(c, _manifest(stub, p=2), tmp_path)
    assert "says 2 resources, but the download has 1" in e.value.message
    assert not (tmp_path / "Patient.1.ndjson").exists()


def test_export_resumes_and_leaves_a_population_folder(stub: Stub, tmp_path: Path, waits: list[float]) -> None:
    """Verify a run cut off in a download, then resumed: one kick-off, the folder with files and manifest only."""
    stub_files = {"b1": _ndjson(PATIENT), "b2": _ndjson(OBS, {**OBS, "id": "o2"})}
    kicks: list[int] = []

    def respond(req: Seen) -> Reply:
        if req.path == "/fhir/$export":
            kicks.append(1)
            return Reply(202, headers={"Content-Location": f"{stub.url}/fhir/status/9"})
        if req.path == "/fhir/status/9":
            return Reply(200, _manifest(stub, p=1))
        if req.path.endswith("/b2") and len(kicks) == 1 and not any(s.path.endswith("/b2") for s in stub.seen[:-1]):
            return Reply(503, outcome("busy"))
        return Reply(200, stub_files[req.path.rsplit("/", 1)[-1]])

    stub.respond = respond
    out = tmp_path / "export"
    req = bx.ExportRequest(bx.export_query(REQS, VALUE_SETS))
    one_try = Client(f"{stub.url}/fhir", retry=RetryPolicy(attempts=1), sleep=lambda s: None)
    with one_try, pytest.raises(ServerUnreachableError):
        bx.run_export(one_try, req, out, policy=_policy(waits))
    assert (out / bx.WORK_DIR / bx.STATE).is_file()
    assert not (out / bx.MANIFEST).exists()
    with pytest.raises(BadInputError):  # a half-done export is never read as one
        spark.export_files(str(out))
    with pytest.raises(UsageError, match="another request"):
        bx.run_export(_client(stub), bx.ExportRequest(req.query, group="g"), out, policy=_policy(waits))
    with _client(stub) as c:
        result = bx.run_export(c, req, out, policy=_policy(waits))
    assert kicks == [1]
    assert result.resumed
    assert sorted(p.name for p in out.iterdir()) == ["Observation.1.ndjson", "Patient.1.ndjson", "manifest.json"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(o["url"], o["count"]) for o in manifest["output"]] == [
        ("Patient.1.ndjson", 1),
        ("Observation.1.ndjson", 2),
    ]
    assert manifest["transactionTime"] == "2026-12-07T10:00:00Z"
    assert [Path(f).name for f in spark.export_files(str(out))] == ["Patient.1.ndjson", "Observation.1.ndjson"]
    with pytest.raises(UsageError, match="not empty"):
        bx.run_export(_client(stub), req, out, policy=_policy(waits))


def test_group_export_fetches_the_referenced_medications(stub: Stub, tmp_path: Path, waits: list[float]) -> None:
    """Verify that a Group export adds the Medications its requests reference, listed in the manifest."""
    med = {"resourceType": "Medication", "id": "med-1"}

    def respond(req: Seen) -> Reply:
        if req.path == "/fhir/Group/g1/$export":
            return Reply(202, headers={"Content-Location": "status/3"})
        if req.path == "/fhir/status/3":
            return Reply(200, {**_manifest(stub), "output": [{"type": "MedicationRequest", "url": "Binary/b3"}]})
        if req.path == "/fhir/Medication":
            assert req.query["_id"] == ["med-1"]
            return Reply(200, {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": med}]})
        return Reply(200, _ndjson(PATIENT, MEDREQ))

    stub.respond = respond
    out = tmp_path / "g"
    with _client(stub) as c:
        bx.run_export(c, bx.ExportRequest(bx.export_query(REQS, VALUE_SETS), group="g1"), out, policy=_policy(waits))
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(o["type"], o["url"], o["count"]) for o in manifest["output"]] == [
        ("MedicationRequest", "MedicationRequest.1.ndjson", 2),
        ("Medication", "Medication.1.ndjson", 1),
    ]
    assert json.loads((out / "Medication.1.ndjson").read_text()) == med


def test_export_errors_are_shown_with_their_text(stub: Stub, tmp_path: Path, waits: list[float]) -> None:
    """Verify that the manifest's error files are fetched and their OperationOutcome text reported."""

    def respond(req: Seen) -> Reply:
        if req.path == "/fhir/$export":
            return Reply(202, headers={"Content-Location": "status/5"})
        if req.path == "/fhir/status/5":
            return Reply(200, {**_manifest(stub), "error": [{"type": "OperationOutcome", "url": "Binary/e1"}]})
        if req.path == "/fhir/Binary/e1":
            return Reply(200, _ndjson(outcome("Observation/o9 could not be read")))
        return Reply(200, _ndjson(PATIENT))

    stub.respond = respond
    lines: list[str] = []
    with _client(stub) as c:
        bx.run_export(
            c,
            bx.ExportRequest(bx.export_query(REQS, VALUE_SETS)),
            tmp_path / "e",
            progress=lines.append,
            policy=_policy(waits),
        )
    assert any("Observation/o9 could not be read" in line for line in lines)


def test_an_expired_file_says_to_export_again(stub: Stub, tmp_path: Path) -> None:
    """Verify that a file the server has deleted (404) is exit 5 with the way out: a new export."""
    _files(stub, {"b1": _ndjson(PATIENT)})
    with _client(stub) as c, pytest.raises(ServerRejectedError) as e:
        bx.download(c, _manifest(stub), tmp_path)
    assert "export again" in e.value.message
    assert e.value.exit_code == ExitCode.SERVER_REJECTED


def test_cli_refuses_a_wrong_out_or_two_levels_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Verify exit 2, without a traceback, for --group with --patient, an --out file and a non-empty --out."""
    base = ["export", "--server", "http://127.0.0.1:9/fhir"]
    assert cli.main([*base, "--group", "g", "--patient", "p", "--out", str(tmp_path / "x")]) == ExitCode.USAGE
    (tmp_path / "file").write_text("x")
    assert cli.main([*base, "--out", str(tmp_path / "file")]) == ExitCode.USAGE
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "a.json").write_text("{}")
    assert cli.main([*base, "--out", str(tmp_path / "full")]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "is a file" in err and "is not empty" in err and "Traceback" not in err
