"""Verify the references layer's PlanDefinition action-cycle check (no engine needed)."""

from __future__ import annotations

from typing import Any

from guideline.core.errors import Finding
from guideline.validation.references import reference_findings
from guideline.validation.subject import Item, Subject

BASE = "http://example.org/fhir/cycles"
PROTOCOL = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/plan-definition-type", "code": "clinical-protocol"}]
}
ECA = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/plan-definition-type", "code": "eca-rule"}]}


def _plan(pid: str, *targets: str, kind: dict[str, Any] = ECA, version: str = "1.0.0") -> dict[str, Any]:
    """A PlanDefinition whose actions point, in order, at the plans `targets` (by id)."""
    return {
        "resourceType": "PlanDefinition",
        "id": pid,
        "url": f"{BASE}/PlanDefinition/{pid}",
        "version": version,
        "type": kind,
        "action": [{"title": t, "definitionCanonical": f"{BASE}/PlanDefinition/{t}|{version}"} for t in targets],
    }


def _subject(*plans: dict[str, Any], prefix: str | None = None) -> Subject:
    items = [
        Item(p, f"fhir_resources/plandefinition/plandefinition-{p['id']}.json", prefix or "PlanDefinition")
        for p in plans
    ]
    return Subject(items, {}, BASE)


def _cycles(s: Subject) -> list[Finding]:
    return [f for f in reference_findings(s) if "reaches" in f.message]


def test_self_reference_is_one_located_error() -> None:
    """Verify that an action naming its own PlanDefinition is one error at that action's definitionCanonical."""
    s = _subject(_plan("A", "A"))
    [f] = _cycles(s)
    assert (f.severity, f.file, f.location, f.layer) == (
        "error",
        "fhir_resources/plandefinition/plandefinition-A.json",
        "PlanDefinition.action[0].definitionCanonical",
        "references",
    )
    assert "PlanDefinition/A -> PlanDefinition/A" in f.message
    assert "remove or retarget this reference" in f.message


def test_two_plan_cycle_is_reported_once() -> None:
    """Verify that A -> B -> A is reported once (where it closes from the first plan), not once per plan."""
    s = _subject(_plan("A", "B"), _plan("B", "A"))
    [f] = _cycles(s)
    assert (f.file, f.location) == (
        "fhir_resources/plandefinition/plandefinition-B.json",
        "PlanDefinition.action[0].definitionCanonical",
    )
    assert "PlanDefinition/A -> PlanDefinition/B -> PlanDefinition/A" in f.message


def test_pathway_recommendation_pathway_cycle() -> None:
    """Verify that a recommendation whose action leads back to its pathway is reported at that action."""
    pathway = _plan("Path", "Rec1", "Rec2", kind=PROTOCOL)
    rec2 = _plan("Rec2")
    rec2["action"] = [{"title": "inner", "action": [{"definitionCanonical": f"{BASE}/PlanDefinition/Path"}]}]
    s = _subject(pathway, _plan("Rec1"), rec2)
    [f] = _cycles(s)
    assert (f.file, f.location) == (
        "fhir_resources/plandefinition/plandefinition-Rec2.json",
        "PlanDefinition.action[0].action[0].definitionCanonical",
    )
    assert "PlanDefinition/Path -> PlanDefinition/Rec2 -> PlanDefinition/Path" in f.message


def test_diamond_is_not_a_cycle() -> None:
    """Verify that two actions reaching the same plan (a diamond) are not reported."""
    s = _subject(
        _plan("Path", "Rec1", "Rec2", kind=PROTOCOL), _plan("Rec1", "Leaf"), _plan("Rec2", "Leaf"), _plan("Leaf")
    )
    assert reference_findings(s) == []


def test_every_distinct_cycle_is_reported_and_validation_continues() -> None:
    """Verify that two cycles through one plan are both reported, and other reference errors still are."""
    a = _plan("A", "A", "B")
    a["action"].append({"definitionCanonical": f"{BASE}/ActivityDefinition/Nope"})
    s = _subject(a, _plan("B", "C"), _plan("C", "B"))
    found = reference_findings(s)
    cycles = [(f.file.rsplit("-", 1)[-1], f.location) for f in found if "reaches" in f.message]
    assert cycles == [
        ("A.json", "PlanDefinition.action[0].definitionCanonical"),
        ("C.json", "PlanDefinition.action[0].definitionCanonical"),
    ]
    assert any("the package has no ActivityDefinition/Nope" in f.message for f in found)


def test_cycle_in_a_bundle_is_located_in_its_entry() -> None:
    """Verify that a cycle inside a bundle is located under the entry's resource path."""
    s = _subject(_plan("A", "A"), prefix="Bundle.entry[2].resource")
    [f] = _cycles(s)
    assert f.location == "Bundle.entry[2].resource.action[0].definitionCanonical"


def test_plans_without_a_unique_id_are_not_mistaken_for_a_cycle() -> None:
    """Verify that two plans sharing an id (already a duplicate error) are not reported as reaching themselves."""
    a, b = _plan("A", "A2"), _plan("A2")
    b["id"] = "A"  # same key as `a`, other url
    assert _cycles(_subject(a, b)) == []
