"""Verify the strict test EHR (tests/support/strictehr.py) against a stub upstream: what it refuses and reshapes."""

from __future__ import annotations

import pytest
import requests

from tests.support.strictehr import PAGE_SIZE, StrictLog, strict_ehr, subset_violations
from tests.unit.remote.stub import Reply, Stub


@pytest.mark.parametrize(
    "query",
    [
        "Patient/p1",
        "Condition?patient=Patient/p1&code=http://snomed.info/sct|1,http://snomed.info/sct|2",
        "Observation?subject=p1&code:in=http://example.org/ValueSet/x&date=ge2020-01-01&_sort=-date&_count=1",
        "MedicationRequest?patient=p1&authoredon=2024-05-01",
        "Patient/{{context.patientId}}",
        "MedicationRequest?patient=Patient/{{context.patientId}}",
    ],
)
def test_subset_queries_pass(query: str) -> None:
    """Verify that reads and searches inside CDS Hooks 2.0's prefetch subset have no violations."""
    assert subset_violations(query) == []


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("MedicationRequest?patient=p1&_include=MedicationRequest:medication", "_include"),
        ("Condition?patient=p1&_revinclude=Provenance:target", "_revinclude"),
        ("Condition?patient=p1&code:not=1", "code:not"),
        ("Condition?patient=p1&code:text=diabetes", "code:text"),
        ("Observation?patient.name=x", "chained"),
        ("Observation?patient=p1&date=sa2020", "date prefix"),
        ("Observation?patient=p1&_has:Condition:subject:code=1", "_has"),
        ("Observation?patient=p1&_elements=code", "_elements"),
        ("Condition", "instance read"),
        ("Patient/p1/_history", "instance read"),
        ("Patient/p1/_history?_count=1", "type-level search"),
    ],
)
def test_queries_outside_the_subset_are_named(query: str, reason: str) -> None:
    """Verify that each construct outside the subset is reported, naming it."""
    problems = subset_violations(query)
    assert problems and reason in "; ".join(problems)


def test_strict_ehr_refuses_include_with_400_and_an_operation_outcome(stub: Stub) -> None:
    """Verify that a search outside the subset never reaches the upstream and is a 400 OperationOutcome."""
    log = StrictLog()
    with strict_ehr(f"{stub.url}/fhir", log) as url:
        resp = requests.get(f"{url}/MedicationRequest?patient=p1&_include=MedicationRequest:medication", timeout=10)
    assert resp.status_code == 400
    assert resp.json()["resourceType"] == "OperationOutcome"
    assert "_include" in resp.json()["issue"][0]["diagnostics"]
    assert stub.seen == [] and len(log.refused) == 1


def test_strict_ehr_pages_small_and_adds_outcomes(stub: Stub) -> None:
    """Verify that a search goes upstream with a small _count and comes back with links here and an outcome entry."""
    stub.routes["GET /fhir/Condition"] = Reply(
        200,
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "link": [{"relation": "next", "url": f"{stub.url}/fhir?_getpages=x&_getpagesoffset=2"}],
            "entry": [{"resource": {"resourceType": "Condition", "id": "c1"}}],
        },
    )
    stub.routes["GET /fhir"] = Reply(200, {"resourceType": "Bundle", "type": "searchset", "entry": []})
    log = StrictLog()
    with strict_ehr(f"{stub.url}/fhir", log) as url:
        page = requests.get(f"{url}/Condition?patient=p1&_count=100", headers={"Authorization": "Bearer t"}, timeout=10)
        nxt = page.json()["link"][0]["url"]
        assert nxt.startswith(url + "?_getpages=")
        last = requests.get(nxt, timeout=10)
    assert stub.seen[0].query["_count"] == [str(PAGE_SIZE)]
    assert stub.seen[0].headers["Authorization"] == "Bearer t"
    assert page.json()["entry"][-1]["search"] == {"mode": "outcome"}
    assert last.json()["entry"][-1]["resource"]["resourceType"] == "OperationOutcome"
    assert log.refused == []
