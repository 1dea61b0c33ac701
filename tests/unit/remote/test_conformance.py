"""Verify the conformance run's pure parts: id prefixing, verdicts, the report and the table (servers: integration)."""

from __future__ import annotations

import json

import pytest

from guideline.cli.conformance import table
from guideline.core.errors import NotFoundError, ServerRejectedError
from guideline.remote.conformance import (
    AGREE,
    DISAGREE,
    ERROR,
    NOT_SUPPORTED,
    CaseResult,
    Cell,
    Report,
    prefixed,
    prefixed_id,
    run_prefix,
    unsupported,
)


def test_prefixed_rewrites_ids_and_references_to_them_only() -> None:
    """Verify that every resource id and every reference to a bundle resource gets the prefix, nothing else."""
    bundle = {
        "resourceType": "Bundle",
        "entry": [
            {"resource": {"resourceType": "Patient", "id": "p1"}},
            {
                "resource": {
                    "resourceType": "Observation",
                    "id": "o1",
                    "subject": {"reference": "Patient/p1"},
                    "performer": [{"reference": "Practitioner/elsewhere"}],
                    "code": {"text": "Patient/p1"},
                }
            },
        ],
    }
    out = prefixed(bundle, "cf-abc123-")
    patient, obs = (e["resource"] for e in out["entry"])
    assert patient["id"] == "cf-abc123-p1" and obs["id"] == "cf-abc123-o1"
    assert obs["subject"]["reference"] == "Patient/cf-abc123-p1"
    assert obs["performer"][0]["reference"] == "Practitioner/elsewhere"
    assert obs["code"]["text"] == "Patient/p1"
    assert bundle["entry"][0]["resource"]["id"] == "p1"  # the input is not changed


def test_prefixed_ids_stay_within_64_characters() -> None:
    """Verify that an id too long for the prefix becomes a digest, the same in the resource and its references."""
    long = "safety4-insulin-atc-statement-no-result-medicationstatement-2"  # 61 characters, a real scenario's
    bundle = {
        "entry": [
            {"resource": {"resourceType": "MedicationStatement", "id": long}},
            {
                "resource": {
                    "resourceType": "Observation",
                    "id": "o",
                    "derivedFrom": [{"reference": f"MedicationStatement/{long}"}],
                }
            },
        ]
    }
    out = prefixed(bundle, "cf-abc123-")
    new = out["entry"][0]["resource"]["id"]
    assert len(new) <= 64 and new.startswith("cf-abc123-") and new == prefixed_id(long, "cf-abc123-")
    assert out["entry"][1]["resource"]["derivedFrom"][0]["reference"] == f"MedicationStatement/{new}"
    assert prefixed_id("short", "cf-abc123-") == "cf-abc123-short"


def test_run_prefixes_differ_and_fit_fhir_ids() -> None:
    """Verify that two runs get different prefixes, short enough to keep the scenarios' ids within 64 characters."""
    a, b = run_prefix(), run_prefix()
    assert a != b and len(a) == len("cf-123456-")


def test_only_missing_operations_count_as_not_supported() -> None:
    """Verify that 404/405/501 mean "not supported" and other refusals do not."""
    assert unsupported(NotFoundError("x", status=404))
    assert unsupported(ServerRejectedError("x", status=501))
    assert not unsupported(ServerRejectedError("x", status=400))
    assert not unsupported(ServerRejectedError("x"))


def _report(*rows: tuple[str, str, str]) -> Report:
    report = Report("http://s/fhir", None, "pkg#1", "cf-000000-")
    for case, apply, cds in rows:
        report.results.append(CaseResult(case, "cf-000000-" + case, {"apply": Cell(apply), "cds": Cell(cds)}))
    return report


def test_agreement_ignores_not_supported_but_needs_one_channel() -> None:
    """Verify the verdict: not supported is no disagreement, an error is one, and nothing compared is no agreement."""
    assert _report(("a", AGREE, NOT_SUPPORTED), ("b", AGREE, NOT_SUPPORTED)).agreed()
    bad = _report(("a", AGREE, AGREE), ("b", DISAGREE, AGREE), ("c", AGREE, ERROR))
    assert not bad.agreed() and bad.disagreements() == [("b", "apply"), ("c", "cds")]
    assert not _report(("a", NOT_SUPPORTED, NOT_SUPPORTED)).agreed()
    doc = bad.to_json()
    assert doc["summary"] == {"apply": {AGREE: 2, DISAGREE: 1}, "cds": {AGREE: 2, ERROR: 1}}
    assert doc["disagreements"] == [{"case": "b", "channel": "apply"}, {"case": "c", "channel": "cds"}]
    json.dumps(doc)  # the report is plain JSON


def test_table_has_a_row_per_scenario_and_a_column_per_channel() -> None:
    """Verify the text table's layout and short forms."""
    lines = table(_report(("gl-adult", AGREE, NOT_SUPPORTED), ("r2", DISAGREE, AGREE))).splitlines()
    assert lines[0].split() == ["scenario", "apply", "cds"]
    assert lines[1].split() == ["gl-adult", "agree", "n/s"]
    assert lines[2].split() == ["r2", "DISAGREE", "agree"]


def test_cds_cell_expects_no_card_from_an_unlisted_informational_recommendation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Verify that an informational recommendation (no activity) the server does not list in discovery is not
    expected to give a card (project safety rule 17), while a missing service that proposes something disagrees."""
    from guideline.remote import conformance

    drug = {"resourceType": "PlanDefinition", "id": "R2", "action": [{"definitionCanonical": "ActivityDefinition/X"}]}
    info = {"resourceType": "PlanDefinition", "id": "R6", "action": [{"title": "prognosis"}]}
    calls: list[str] = []

    def fake_call(_client: object, service: str, **_kw: object) -> dict[str, object]:
        calls.append(service)
        return {"cards": [{"summary": service}]}

    monkeypatch.setattr(conformance, "call", fake_call)
    cds = object()
    ch = conformance.Channels(fhir=None, cds=cds, plans=[drug, info], templates={"R2": {}})  # type: ignore[arg-type]
    cell = conformance._cds_cell(ch, "p", {"R2": [], "R6": []})
    assert (cell.status, cell.expected, cell.got, calls) == (AGREE, ["R2"], ["R2"], ["R2"])
    # Listed (informational cards on), R6 is called and expected like any other.
    ch = conformance.Channels(fhir=None, cds=cds, plans=[drug, info], templates={"R2": {}, "R6": {}})  # type: ignore[arg-type]
    assert conformance._cds_cell(ch, "p", {"R2": [], "R6": []}).status == AGREE
    # A service that proposes something must be listed.
    ch = conformance.Channels(fhir=None, cds=cds, plans=[drug, info], templates={"R6": {}})  # type: ignore[arg-type]
    assert conformance._cds_cell(ch, "p", {"R2": [], "R6": []}).status == DISAGREE
