"""Verify `apply` without a server: the pathway walk over server plans and CarePlans read into the one model."""

from __future__ import annotations

import copy
from typing import Any, cast

import pytest

from guideline.core.errors import ContentError, EngineError, ServerRejectedError
from guideline.core.fhir import CQF_MESSAGES_EXT, PLAN_TYPE_SYSTEM
from guideline.evaluation.model import Activity, Recommendation, document
from guideline.remote.apply import apply_patient, careplan_recommendation, recommendation_plans
from guideline.remote.http import Client

BASE = "http://example.org/fhir"
VERSION = "0.1.0"
AT = "2026-06-01T12:00:00Z"
LOINC = "http://loinc.org"


def _canonical(rtype: str, rid: str) -> str:
    return f"{BASE}/{rtype}/{rid}|{VERSION}"


def _plan(pid: str, actions: list[Any], kind: str = "eca-rule") -> dict[str, Any]:
    return {
        "resourceType": "PlanDefinition",
        "id": pid,
        "url": f"{BASE}/PlanDefinition/{pid}",
        "version": VERSION,
        "title": f"{pid} plan",
        "type": {"coding": [{"system": PLAN_TYPE_SYSTEM, "code": kind}]},
        "action": actions,
    }


def _to(pid: str, rtype: str = "PlanDefinition") -> dict[str, Any]:
    return {"title": f"to {pid}", "definitionCanonical": _canonical(rtype, pid)}


class FakeClient:
    """Answers the reads and $apply calls `apply` makes from canned resources, and records them."""

    def __init__(self, plans: list[dict[str, Any]], careplans: dict[str, dict[str, Any]] | None = None) -> None:
        self.plans = {p["id"]: p for p in plans}
        self.careplans = careplans or {}
        self.calls: list[tuple[str, str, Any]] = []

    def get_json(self, path: str, params: dict[str, str] | None = None, ok: tuple[int, ...] = (200,)) -> Any:
        self.calls.append(("GET", path, params))
        if path.startswith("PlanDefinition/"):
            return self.plans[path.split("/", 1)[1]]
        assert path == "PlanDefinition" and params is not None
        hits = [
            p
            for p in self.plans.values()
            if p["url"] == params["url"] and params.get("version", p["version"]) == p["version"]
        ]
        return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": p} for p in hits]}

    def post_json(self, path: str, body: Any) -> Any:
        self.calls.append(("POST", path, body))
        return self.careplans[path.split("/")[1]]


def _client(fake: FakeClient) -> Client:
    return cast(Client, fake)


# ---------------------------------------------------------------- the server's pathway


def test_plans_follow_the_pathway_and_nested_pathways_in_order() -> None:
    """Verify that plans come in pathway order, nested pathways followed, each canonical searched once."""
    nested = _plan("Q", [_to("R2")], kind="clinical-protocol")
    pathway = _plan(
        "P",
        [{"title": "top", "action": [_to("R1"), _to("Q"), _to("AD", "ActivityDefinition"), _to("R3"), _to("R1")]}],
        kind="clinical-protocol",
    )
    recs = [_plan(r, [{"title": r}]) for r in ("R1", "R2", "R3")]
    fake = FakeClient([pathway, nested, *recs])
    plans = recommendation_plans(_client(fake), "P")
    assert [p["id"] for p in plans] == ["R1", "R2", "R3", "R1"]
    searches = [params for method, path, params in fake.calls if path == "PlanDefinition"]
    assert searches == [{"url": f"{BASE}/PlanDefinition/{pid}", "version": VERSION} for pid in ("R1", "Q", "R2", "R3")]


def test_a_plan_the_server_lacks_is_a_server_rejection() -> None:
    """Verify that a reference the server cannot resolve says to publish the whole package."""
    fake = FakeClient([_plan("P", [_to("R1")], kind="clinical-protocol")])
    with pytest.raises(ServerRejectedError, match="references .*PlanDefinition/R1.*publish the whole package"):
        recommendation_plans(_client(fake), "P")


def test_a_server_pathway_that_reaches_itself_is_refused() -> None:
    """Verify that a pathway referencing itself is a ContentError at that reference, not endless searching."""
    fake = FakeClient([_plan("P", [_to("R1"), {"action": [_to("P")]}], kind="clinical-protocol"), _plan("R1", [])])
    with pytest.raises(ContentError) as err:
        recommendation_plans(_client(fake), "P")
    (finding,) = err.value.findings
    assert (finding.file, finding.location) == ("PlanDefinition/P", "action[1].action[0].definitionCanonical")


def test_a_cycle_through_a_second_server_pathway_is_refused() -> None:
    """Verify that P -> Q -> P is a ContentError at Q's reference back to P."""
    fake = FakeClient(
        [
            _plan("P", [_to("Q")], kind="clinical-protocol"),
            _plan("Q", [_to("R1"), _to("P")], kind="clinical-protocol"),
            _plan("R1", []),
        ]
    )
    with pytest.raises(ContentError) as err:
        recommendation_plans(_client(fake), "P")
    (finding,) = err.value.findings
    assert (finding.file, finding.location) == ("PlanDefinition/Q", "action[1].definitionCanonical")
    assert "PlanDefinition/P -> PlanDefinition/Q -> PlanDefinition/P" in finding.message


# ---------------------------------------------------------------- CarePlans into the model

R1 = _plan(
    "R1",
    [
        {
            "title": "Assess insulin",
            "description": "static text",
            "documentation": [{"type": "citation", "citation": "Quoted sentence."}],
            "definitionCanonical": _canonical("ActivityDefinition", "Glucose"),
            "action": [{"definitionCanonical": _canonical("ActivityDefinition", "Advice")}],
        }
    ],
)

# A CarePlan in the shape HAPI's clinical-reasoning $apply returns for R4: the applied actions in a
# contained RequestGroup, each generated request contained and referenced from its action.
CAREPLAN: dict[str, Any] = {
    "resourceType": "CarePlan",
    "id": "R1",
    "contained": [
        {
            "resourceType": "RequestGroup",
            "id": "R1",
            "instantiatesCanonical": [_canonical("PlanDefinition", "R1")],
            "status": "draft",
            "intent": "proposal",
            "subject": {"reference": "Patient/p1"},
            "action": [
                {
                    "title": "Assess insulin",
                    "description": "Patient-specific text",
                    "resource": {"reference": "#Glucose"},
                    "action": [{"resource": {"reference": "#Advice"}}],
                }
            ],
        },
        {
            "resourceType": "ServiceRequest",
            "id": "Glucose",
            "instantiatesCanonical": [_canonical("ActivityDefinition", "Glucose")],
            "status": "draft",
            "intent": "proposal",
            "code": {"coding": [{"system": LOINC, "code": "1558-6"}, {"system": LOINC, "code": "14771-0"}]},
            "subject": {"reference": "Patient/p1"},
        },
        {
            "resourceType": "CommunicationRequest",
            "id": "Advice",
            "status": "draft",
            "payload": [{"contentString": "Eat less sugar."}],
            "subject": {"reference": "Patient/p1"},
        },
    ],
    "instantiatesCanonical": [_canonical("PlanDefinition", "R1")],
    "status": "draft",
    "intent": "proposal",
    "subject": {"reference": "Patient/p1"},
    "activity": [{"reference": {"reference": "#R1"}}],
}


def test_a_careplan_becomes_the_model_recommendation() -> None:
    """Verify that a CarePlan reads into the evaluation model: card from the plan, activities in action order."""
    rec = careplan_recommendation(R1, CAREPLAN)
    assert rec == Recommendation(
        "R1",
        "Assess insulin",
        "Quoted sentence.",
        "Patient-specific text",
        [
            Activity("ServiceRequest", (f"{LOINC}|14771-0", f"{LOINC}|1558-6"), "Glucose"),
            Activity("CommunicationRequest", (), ""),
        ],
    )
    assert not rec.informational


def test_only_messages_make_an_informational_recommendation() -> None:
    """Verify that the model's rule decides `informational`: a CarePlan with only a message orders nothing."""
    cp = copy.deepcopy(CAREPLAN)
    cp["contained"][0]["action"][0]["resource"] = {"reference": "#Advice"}
    cp["contained"][0]["action"][0]["action"] = []
    rec = careplan_recommendation(R1, cp)
    assert rec is not None and rec.informational
    assert [a.resource_type for a in rec.activities] == ["CommunicationRequest"]


def test_the_title_falls_back_to_the_plan() -> None:
    """Verify that without a title on the applied action the card title is the plan action's, then the plan's."""
    cp = copy.deepcopy(CAREPLAN)
    del cp["contained"][0]["action"][0]["title"]
    assert (rec := careplan_recommendation(R1, cp)) is not None and rec.title == "Assess insulin"
    plan = copy.deepcopy(R1)
    del plan["action"][0]["title"]
    assert (rec := careplan_recommendation(plan, cp)) is not None and rec.title == "R1 plan"


def test_no_applied_action_is_no_recommendation() -> None:
    """Verify that a CarePlan whose RequestGroup has no action (nothing applied) gives no recommendation."""
    cp = copy.deepcopy(CAREPLAN)
    cp["contained"][0]["action"] = []
    assert careplan_recommendation(R1, cp) is None
    cp["activity"] = []
    assert careplan_recommendation(R1, cp) is None


def test_engine_errors_in_the_careplan_are_raised() -> None:
    """Verify that an OperationOutcome the CarePlan points to with cqf-messages becomes an EngineError."""
    cp = copy.deepcopy(CAREPLAN)
    cp["contained"].append(
        {
            "resourceType": "OperationOutcome",
            "id": "apply-outcome",
            "issue": [
                {"severity": "error", "code": "exception", "diagnostics": "Could not resolve expression Applies"}
            ],
        }
    )
    cp["extension"] = [{"url": CQF_MESSAGES_EXT, "valueReference": {"reference": "#apply-outcome"}}]
    with pytest.raises(EngineError, match="PlanDefinition/R1: Could not resolve expression Applies"):
        careplan_recommendation(R1, cp)


def test_apply_patient_builds_the_recommend_document() -> None:
    """Verify that apply_patient $applies each plan and returns the model's `recommend --json` document."""
    silent = _plan("R2", [{"title": "never"}])
    empty = copy.deepcopy(CAREPLAN)
    empty["contained"][0]["action"] = []
    fake = FakeClient([R1, silent], {"R1": CAREPLAN, "R2": empty})
    doc = apply_patient(_client(fake), "P", "p1", [R1, silent], at=AT)
    rec = careplan_recommendation(R1, CAREPLAN)
    assert rec is not None
    assert doc == document("p1", AT, [rec])
    assert doc["recommendations"][0] == {
        "id": "R1",
        "title": "Assess insulin",
        "informational": False,
        "source": "Quoted sentence.",
        "activities": [
            {"resourceType": "ServiceRequest", "codes": [f"{LOINC}|14771-0", f"{LOINC}|1558-6"]},
            {"resourceType": "CommunicationRequest", "codes": []},
        ],
    }
    posts = [(path, body) for method, path, body in fake.calls if method == "POST"]
    assert [path for path, _ in posts] == ["PlanDefinition/R1/$apply", "PlanDefinition/R2/$apply"]
    params = {p["name"]: p for p in posts[0][1]["parameter"]}
    assert params["subject"]["valueString"] == "Patient/p1"
    assert params["parameters"]["resource"]["parameter"][0]["valueDateTime"] == AT


def test_apply_patient_needs_a_careplan() -> None:
    """Verify that an $apply answer that is not a CarePlan is a server rejection naming the plan."""
    fake = FakeClient([R1], {"R1": {"resourceType": "OperationOutcome"}})
    with pytest.raises(ServerRejectedError, match=r"PlanDefinition/R1/\$apply did not return a CarePlan"):
        apply_patient(_client(fake), "P", "p1", [R1], at=AT)
