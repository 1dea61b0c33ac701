"""Verify the recommendation model and the pathway walk: applicability per branch, order, and cycles."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from guideline.content.cql import Engine
from guideline.content.package import Package, build_package
from guideline.core.config import Config
from guideline.core.errors import ContentError
from guideline.core.fhir import PLAN_TYPE_SYSTEM
from guideline.evaluation.bundles import load_patient_bundle
from guideline.evaluation.model import Activity, Recommendation, activity_codes, document, request_codes
from guideline.evaluation.patient import evaluate
from guideline.evaluation.population import EnginePool, EvaluationPlan, evaluate_population
from guideline.evaluation.walk import walk_pathways
from tests.support import CASES_DIR

BASE = "http://example.org/fhir"
LOINC = "http://loinc.org"
AT = "2026-06-01T12:00:00Z"


# ---------------------------------------------------------------- the model


def test_activity_codes_mirror_the_request_apply_generates() -> None:
    """Verify that an ActivityDefinition and the request $apply makes from it give the same sorted codes."""
    med = {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "2"}
    other = {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1"}
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = [
        (
            {"kind": "MedicationRequest", "id": "M", "productCodeableConcept": {"coding": [med, other]}},
            {"resourceType": "MedicationRequest", "medicationCodeableConcept": {"coding": [med, other]}},
        ),
        (
            {"kind": "ServiceRequest", "id": "S", "code": {"coding": [{"system": LOINC, "code": "1558-6"}]}},
            {"resourceType": "ServiceRequest", "code": {"coding": [{"system": LOINC, "code": "1558-6"}]}},
        ),
        (
            {"kind": "CommunicationRequest", "id": "C", "code": {"text": "Eat less", "coding": [med]}},
            {"resourceType": "CommunicationRequest", "payload": [{"contentString": "Eat less"}]},
        ),
    ]
    for ad, request in pairs:
        assert sorted(activity_codes(ad)) == sorted(request_codes(request))
        local, server = Activity.of_definition(ad), Activity.of_request(request)
        assert (local.resource_type, local.codes) == (server.resource_type, server.codes)
        assert list(local.codes) == sorted(local.codes)
    assert Activity.of_definition(pairs[0][0]).definition == "M"


def test_a_request_names_the_definition_it_instantiates() -> None:
    """Verify that a generated request's instantiatesCanonical gives the activity's definition id, if present."""
    canonical = f"{BASE}/ActivityDefinition/GLOrderHbA1c|0.1.0"
    assert Activity.of_request({"resourceType": "ServiceRequest", "instantiatesCanonical": [canonical]}).definition == (
        "GLOrderHbA1c"
    )
    assert (
        Activity.of_request({"resourceType": "Task", "instantiatesCanonical": canonical}).definition == "GLOrderHbA1c"
    )
    assert Activity.of_request({"resourceType": "CommunicationRequest"}).definition == ""


def test_informational_means_nothing_is_ordered() -> None:
    """Verify that a recommendation is informational exactly when none of its activities is an order."""
    rec = Recommendation("R", "t", "s", "d")
    assert rec.informational
    rec.activities.append(Activity("CommunicationRequest", ()))
    assert rec.informational
    rec.activities.append(Activity("ServiceRequest", ("http://loinc.org|1558-6",)))
    assert not rec.informational
    assert [a.order for a in rec.activities] == [False, True]


def test_the_card_comes_from_the_first_applicable_action() -> None:
    """Verify that title, source and detail come from the action (title falling back to the plan's)."""
    plan = {"id": "R", "title": "Plan title"}
    action = {"description": "static", "documentation": [{"type": "citation", "citation": "Quote."}]}
    rec = Recommendation.from_action(plan, action)
    assert (rec.id, rec.title, rec.source, rec.detail) == ("R", "Plan title", "Quote.", "static")
    assert Recommendation.from_action(plan, {**action, "title": "Card"}, "dynamic").title == "Card"
    assert Recommendation.from_action(plan, action, "dynamic").detail == "dynamic"
    assert Recommendation.from_action(plan, {}).source == ""


def test_document_shape() -> None:
    """Verify that the `recommend --json` document has the documented keys, codes as lists and no detail."""
    rec = Recommendation("R", "t", "s", "d", [Activity("ServiceRequest", ("b", "a"), "AD")])
    doc = document("p1", AT, [rec])
    assert doc == {
        "patient": "p1",
        "evaluatedAt": AT,
        "recommendations": [
            {
                "id": "R",
                "title": "t",
                "informational": False,
                "source": "s",
                "activities": [{"resourceType": "ServiceRequest", "codes": ["b", "a"]}],
            }
        ],
    }


# ---------------------------------------------------------------- the walk on a small package


def _plan(pid: str, actions: list[Any], *, kind: str = "eca-rule", library: str | None = None) -> dict[str, Any]:
    plan: dict[str, Any] = {
        "resourceType": "PlanDefinition",
        "id": pid,
        "url": f"{BASE}/PlanDefinition/{pid}",
        "title": f"{pid} title",
        "type": {"coding": [{"system": PLAN_TYPE_SYSTEM, "code": kind}]},
        "action": actions,
    }
    if library is not None:
        plan["library"] = [f"{BASE}/Library/{library}"]
    return plan


def _when(define: str) -> list[dict[str, Any]]:
    return [{"kind": "applicability", "expression": {"language": "text/cql-identifier", "expression": define}}]


def _to(rtype: str, rid: str, **more: Any) -> dict[str, Any]:
    return {"definitionCanonical": f"{BASE}/{rtype}/{rid}", **more}


def _ad(rid: str, kind: str, code: str = "") -> dict[str, Any]:
    ad: dict[str, Any] = {"resourceType": "ActivityDefinition", "id": rid, "url": f"{BASE}/ActivityDefinition/{rid}"}
    ad["kind"] = kind
    if code:
        ad["code"] = {"coding": [{"system": LOINC, "code": code}]}
    return ad


def _small_package(config: Config, *extra: dict[str, Any], pathway_actions: list[Any] | None = None) -> Package:
    """A pathway P reaching R1 (an order, one sub-action only when "Sub") and R2 (a message), both in library L."""
    lib = {"resourceType": "Library", "id": "L", "url": f"{BASE}/Library/L", "name": "L"}
    r1 = _plan(
        "R1",
        [
            {
                "title": "R1 card",
                "condition": _when("Applies"),
                **_to("ActivityDefinition", "Glucose"),
                "action": [
                    {"condition": _when("Sub"), **_to("ActivityDefinition", "HbA1c")},
                    _to("ActivityDefinition", "Insulin"),
                ],
            }
        ],
        library="L",
    )
    r2 = _plan("R2", [{"title": "R2 card", **_to("ActivityDefinition", "Message")}])
    actions = (
        pathway_actions if pathway_actions is not None else [_to("PlanDefinition", "R1"), _to("PlanDefinition", "R2")]
    )
    pathway = _plan("P", actions, kind="clinical-protocol")
    ads = [
        _ad("Glucose", "ServiceRequest", "1558-6"),
        _ad("HbA1c", "ServiceRequest", "4548-4"),
        _ad("Insulin", "ServiceRequest", "1554-5"),
        _ad("Message", "CommunicationRequest"),
    ]
    return Package(config=config, resources=[lib, pathway, r1, r2, *ads, *extra], elm={"L": {}})


def _fetcher(values: dict[str, Any]) -> tuple[list[str], Any]:
    asked: list[str] = []

    def fetch(library: str) -> dict[str, Any]:
        asked.append(library)
        return values

    return asked, fetch


def test_walk_follows_applicable_branches_in_order(config: Config) -> None:
    """Verify that only applicable actions contribute, in document order, and each library is fetched once."""
    asked, fetch = _fetcher({"Applies": True, "Sub": False})
    recs = walk_pathways(_small_package(config), fetch)
    assert [(r.id, r.title, r.informational) for r in recs] == [("R1", "R1 card", False), ("R2", "R2 card", True)]
    assert [a.definition for a in recs[0].activities] == ["Glucose", "Insulin"]
    assert asked == ["L"]
    _, fetch = _fetcher({"Applies": True, "Sub": True})
    assert [a.definition for a in walk_pathways(_small_package(config), fetch)[0].activities] == [
        "Glucose",
        "HbA1c",
        "Insulin",
    ]
    # A null condition does not apply (as in HAPI): R1 does not fire at all.
    _, fetch = _fetcher({"Applies": None, "Sub": True})
    assert [r.id for r in walk_pathways(_small_package(config), fetch)] == ["R2"]


def test_a_recommendation_reached_twice_fires_once(config: Config) -> None:
    """Verify that a diamond (the pathway reaching R1 twice, once through a nested pathway) reports R1 once."""
    nested = _plan("Q", [_to("PlanDefinition", "R1")], kind="clinical-protocol")
    actions = [_to("PlanDefinition", "Q"), _to("PlanDefinition", "R1"), _to("PlanDefinition", "R2")]
    _, fetch = _fetcher({"Applies": True, "Sub": False})
    recs = walk_pathways(_small_package(config, nested, pathway_actions=actions), fetch)
    assert [r.id for r in recs] == ["R1", "R2"]


def test_an_inapplicable_branch_is_not_walked(config: Config) -> None:
    """Verify that nothing below an action whose condition is false is visited, not even a broken reference."""
    pathway = _plan(
        "P",
        [{"condition": _when("Applies"), "action": [_to("PlanDefinition", "Missing")]}],
        kind="clinical-protocol",
        library="L",
    )
    pkg = _small_package(config)
    pkg.resources[1] = pathway
    _, fetch = _fetcher({"Applies": False})
    assert walk_pathways(pkg, fetch) == []
    _, fetch = _fetcher({"Applies": True})
    with pytest.raises(ContentError, match="PlanDefinition/P: .*/PlanDefinition/Missing is not in the package"):
        walk_pathways(pkg, fetch)


def _cycle_findings(err: pytest.ExceptionInfo[ContentError]) -> tuple[str, str, str]:
    (finding,) = err.value.findings
    return finding.file, finding.location, finding.message


def test_walk_refuses_a_pathway_that_reaches_itself(config: Config) -> None:
    """Verify that a pathway referencing itself is a ContentError at that reference, not endless recursion."""
    actions = [_to("PlanDefinition", "R1"), {"action": [_to("PlanDefinition", "P")]}]
    _, fetch = _fetcher({"Applies": True, "Sub": False})
    with pytest.raises(ContentError) as err:
        walk_pathways(_small_package(config, pathway_actions=actions), fetch)
    file, location, message = _cycle_findings(err)
    assert (file, location) == ("PlanDefinition/P", "action[1].action[0].definitionCanonical")
    assert "PlanDefinition/P -> PlanDefinition/P" in message


def test_walk_refuses_a_cycle_through_a_second_pathway(config: Config) -> None:
    """Verify that P -> Q -> P is a ContentError at Q's reference back to P."""
    q = _plan("Q", [_to("PlanDefinition", "R2"), _to("PlanDefinition", "P")], kind="clinical-protocol")
    _, fetch = _fetcher({"Applies": True, "Sub": False})
    with pytest.raises(ContentError) as err:
        walk_pathways(_small_package(config, q, pathway_actions=[_to("PlanDefinition", "Q")]), fetch)
    file, location, message = _cycle_findings(err)
    assert (file, location) == ("PlanDefinition/Q", "action[1].definitionCanonical")
    assert "PlanDefinition/P -> PlanDefinition/Q -> PlanDefinition/P" in message


def test_evaluation_plan_refuses_a_cycle(config: Config) -> None:
    """Verify that population mode's plan (which walks every branch) refuses a cycle before any patient."""
    q = _plan("Q", [_to("PlanDefinition", "P")], kind="clinical-protocol")
    with pytest.raises(ContentError) as err:
        EvaluationPlan.of(_small_package(config, q, pathway_actions=[_to("PlanDefinition", "Q")]))
    assert _cycle_findings(err)[:2] == ("PlanDefinition/Q", "action[0].definitionCanonical")


def test_evaluation_plan_lists_libraries_and_defines(config: Config) -> None:
    """Verify that the plan gates on the pathways' libraries and asks each reachable library for its defines."""
    plan = EvaluationPlan.of(_small_package(config))
    assert plan.gate == [] and plan.reachable == ["L"]
    assert plan.expressions == {"L": ["Applies", "Sub"]}


# ---------------------------------------------------------------- the real package, one patient and many


@pytest.fixture(scope="module")
def package(config: Config, engine: Engine) -> Package:
    return build_package(config, engine)


def _with_loop(pkg: Package, *, through_second: bool) -> Package:
    """The package with its pathway's first action also reaching the pathway again (directly or via a second)."""
    resources = copy.deepcopy(pkg.resources)
    pathway = next(
        r for r in resources if r["id"] == pkg.config.package.pathway and r["resourceType"] == "PlanDefinition"
    )
    target = pathway["url"]
    if through_second:
        second = {
            **{k: pathway[k] for k in ("resourceType", "type", "status")},
            "id": f"{pathway['id']}Loop",
            "url": f"{pathway['url']}Loop",
            "action": [{"title": "back", "definitionCanonical": pathway["url"]}],
        }
        resources.append(second)
        target = second["url"]
    pathway["action"][0]["action"].append({"title": "loop", "definitionCanonical": target})
    return dataclasses.replace(pkg, resources=resources)


@pytest.fixture(scope="module")
def pool() -> Iterator[EnginePool]:
    with EnginePool(1) as p:
        yield p


@pytest.mark.parametrize("through_second", [False, True], ids=["self", "second-plan"])
def test_single_patient_evaluation_refuses_a_cycle(package: Package, engine: Engine, through_second: bool) -> None:
    """Verify that `evaluate` for a patient in the population raises ContentError at the looping reference."""
    bundle, _ = load_patient_bundle(CASES_DIR / "r2-insulin-resistance-condition" / "patient.json")
    looped = _with_loop(package, through_second=through_second)
    with pytest.raises(ContentError) as err:
        evaluate(looped, bundle, AT, engine)
    file, location, _ = _cycle_findings(err)
    if through_second:
        assert (file, location) == ("PlanDefinition/GLPathwayLoop", "action[0].definitionCanonical")
    else:
        assert (file, location) == ("PlanDefinition/GLPathway", "action[0].action[6].definitionCanonical")


@pytest.mark.parametrize("through_second", [False, True], ids=["self", "second-plan"])
def test_population_evaluation_refuses_a_cycle(package: Package, pool: EnginePool, through_second: bool) -> None:
    """Verify that population evaluation raises ContentError for a looping pathway before evaluating anyone."""
    looped = _with_loop(package, through_second=through_second)
    with pytest.raises(ContentError, match="definitionCanonical reaches PlanDefinition/GLPathway again"):
        list(evaluate_population(looped, [], AT, pool))
