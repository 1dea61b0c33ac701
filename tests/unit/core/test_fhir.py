"""Verify the shared FHIR helpers: the action and pathway walks, cycle guard, bundles, engine messages, codings."""

from __future__ import annotations

import json
from typing import Any

import pytest

from guideline.core.errors import ContentError
from guideline.core.fhir import (
    CQF_MESSAGES_EXT,
    PLAN_TYPE_SYSTEM,
    ActionStep,
    coding_entries,
    codings,
    collection_bundle,
    collection_bundle_json,
    engine_messages,
    is_pathway,
    issue_text,
    iter_actions,
    outcome_issues,
    plan_types,
    primary_library,
    walk_pathway,
)

BASE = "http://example.org/fhir/PlanDefinition"


def _plan(pid: str, actions: list[Any], kind: str = "clinical-protocol") -> dict[str, Any]:
    return {
        "resourceType": "PlanDefinition",
        "id": pid,
        "url": f"{BASE}/{pid}",
        "type": {"coding": [{"system": PLAN_TYPE_SYSTEM, "code": kind}]},
        "action": actions,
    }


def _ref(pid: str, title: str = "", **more: Any) -> dict[str, Any]:
    return {"title": title or f"to {pid}", "definitionCanonical": f"{BASE}/{pid}", **more}


def _resolver(*plans: dict[str, Any]) -> Any:
    by_url = {p["url"]: p for p in plans}
    return lambda ref: by_url.get(ref.partition("|")[0])


def _walk(steps: list[ActionStep]) -> list[tuple[str, str, int]]:
    return [(str(s.plan["id"]), s.path, s.depth) for s in steps]


# ---------------------------------------------------------------- iter_actions


def test_actions_come_depth_first_in_document_order_with_paths() -> None:
    """Verify that actions come depth-first in document order, each with its JSON path, top-level flag and depth."""
    plan = _plan(
        "P",
        [
            {"title": "a", "action": [{"title": "a1", "action": [{"title": "a1x"}]}, {"title": "a2"}]},
            "not an action",
            {"title": "b"},
        ],
    )
    steps = list(iter_actions(plan))
    assert [s.action["title"] for s in steps] == ["a", "a1", "a1x", "a2", "b"]
    assert [s.path for s in steps] == [
        "action[0]",
        "action[0].action[0]",
        "action[0].action[0].action[0]",
        "action[0].action[1]",
        "action[2]",
    ]
    assert [s.top for s in steps] == [True, False, False, False, True]
    assert {s.depth for s in steps} == {0} and all(s.plan is plan for s in steps)


def test_referenced_plans_are_followed_after_the_action_and_before_its_sub_actions() -> None:
    """Verify that with a resolver a referenced plan's actions follow the referencing action, before its sub-actions."""
    rec = _plan("R", [{"title": "r"}], kind="eca-rule")
    pathway = _plan("P", [_ref("R", action=[{"title": "sub"}]), {"title": "after"}])
    steps = list(iter_actions(pathway, _resolver(pathway, rec)))
    assert _walk(steps) == [
        ("P", "action[0]", 0),
        ("R", "action[0]", 1),
        ("P", "action[0].action[0]", 0),
        ("P", "action[1]", 0),
    ]
    # Without a resolver, references are not followed.
    assert [s.plan["id"] for s in iter_actions(pathway)] == ["P", "P", "P"]


def test_only_plan_definitions_are_followed() -> None:
    """Verify that a reference resolving to something other than a PlanDefinition is not walked into."""
    ad = {"resourceType": "ActivityDefinition", "id": "A", "url": f"{BASE}/A", "action": [{"title": "no"}]}
    pathway = _plan("P", [_ref("A")])
    assert _walk(list(iter_actions(pathway, _resolver(ad)))) == [("P", "action[0]", 0)]


def test_enter_decides_what_is_walked_below_a_step() -> None:
    """Verify that `enter` sees every step and that nothing below a step it refuses is walked."""
    rec = _plan("R", [{"title": "r"}], kind="eca-rule")
    pathway = _plan(
        "P",
        [
            {"title": "closed", "action": [{"title": "hidden"}, _ref("R")]},
            {"title": "open", "action": [_ref("R")]},
        ],
    )
    asked: list[str] = []

    def enter(step: ActionStep) -> bool:
        asked.append(step.action["title"])
        return bool(step.action["title"] != "closed")

    steps = list(iter_actions(pathway, _resolver(rec), enter=enter))
    assert [s.action["title"] for s in steps] == ["closed", "open", "to R", "r"]
    assert asked == ["closed", "open", "to R", "r"]


def test_a_plan_that_reaches_itself_is_a_located_content_error() -> None:
    """Verify that a plan referencing itself raises ContentError at the definitionCanonical that closes the loop."""
    pathway = _plan("P", [{"title": "top", "action": [_ref("P")]}])
    with pytest.raises(ContentError) as err:
        list(iter_actions(pathway, _resolver(pathway)))
    (finding,) = err.value.findings
    assert finding.file == "PlanDefinition/P"
    assert finding.location == "action[0].action[0].definitionCanonical"
    assert "PlanDefinition/P -> PlanDefinition/P" in finding.message
    assert str(err.value).startswith("PlanDefinition/P: action[0].action[0].definitionCanonical reaches")


def test_a_cycle_through_a_second_plan_is_located_in_the_second_plan() -> None:
    """Verify that P -> Q -> P raises ContentError at Q's reference back to P, naming the whole chain."""
    p = _plan("P", [_ref("Q")])
    q = _plan("Q", [{"title": "q"}, _ref("P")])
    seen: list[tuple[str, str, int]] = []
    with pytest.raises(ContentError) as err:
        for step in iter_actions(p, _resolver(p, q)):
            seen.append((str(step.plan["id"]), step.path, step.depth))
    assert seen == [("P", "action[0]", 0), ("Q", "action[0]", 1), ("Q", "action[1]", 1)]
    (finding,) = err.value.findings
    assert (finding.file, finding.location) == ("PlanDefinition/Q", "action[1].definitionCanonical")
    assert "PlanDefinition/P -> PlanDefinition/Q -> PlanDefinition/P" in finding.message


def test_a_diamond_is_not_a_cycle() -> None:
    """Verify that a plan reached twice along different branches is walked twice and raises nothing."""
    shared = _plan("S", [{"title": "s"}], kind="eca-rule")
    left = _plan("L", [_ref("S")])
    right = _plan("Rt", [_ref("S")])
    top = _plan("P", [_ref("L"), _ref("Rt"), _ref("S")])
    steps = list(iter_actions(top, _resolver(shared, left, right, top)))
    assert [s.plan["id"] for s in steps if s.action.get("title") == "s"] == ["S", "S", "S"]
    assert [s.depth for s in steps if s.action.get("title") == "s"] == [2, 2, 1]


def test_when_filters_steps_before_they_are_yielded_or_entered() -> None:
    """Verify that a step `when` rejects is neither yielded nor walked below, and is asked about only once."""
    pathway = _plan(
        "P", [{"title": "no", "action": [{"title": "hidden"}]}, {"title": "yes", "action": [{"title": "y"}]}]
    )
    asked: list[str] = []

    def when(step: ActionStep) -> bool:
        asked.append(step.action["title"])
        return bool(step.action["title"] != "no")

    assert [s.action["title"] for s in iter_actions(pathway, when=when)] == ["yes", "y"]
    assert asked == ["no", "yes", "y"]


# ---------------------------------------------------------------- the pathway walk


def test_the_pathway_walk_names_recommendations_and_follows_only_pathways() -> None:
    """Verify that the walk yields each action with its target, enters nested pathways, never a recommendation."""
    rec = _plan("R", [{"title": "inside R", "action": [_ref("R2")]}], kind="eca-rule")
    rec2 = _plan("R2", [{"title": "inside R2"}], kind="eca-rule")
    nested = _plan("Q", [_ref("R2")])
    ad = {"resourceType": "ActivityDefinition", "id": "A", "url": f"{BASE}/A"}
    pathway = _plan("P", [_ref("R"), {"title": "group", "action": [_ref("Q"), _ref("A")]}])
    walked = list(walk_pathway(pathway, _resolver(rec, rec2, nested, ad)))
    assert [(w.step.plan["id"], w.step.path) for w in walked] == [
        ("P", "action[0]"),
        ("P", "action[1]"),
        ("P", "action[1].action[0]"),
        ("Q", "action[0]"),
        ("P", "action[1].action[1]"),
    ]
    assert [w.recommendation["id"] if w.recommendation else None for w in walked] == ["R", None, None, "R2", None]
    assert walked[4].target is ad


def test_the_pathway_walk_resolves_only_what_applies_and_reports_what_is_missing() -> None:
    """Verify that `when` keeps an inapplicable reference unresolved, and `missing` raises for an unknown one."""
    pathway = _plan("P", [_ref("Gone", "no"), _ref("AlsoGone")])
    resolved: list[str] = []

    def resolve(ref: str) -> dict[str, Any] | None:
        resolved.append(ref.rsplit("/", 1)[-1])
        return None

    def missing(step: ActionStep, ref: str) -> Exception:
        return LookupError(f"{step.path}: {ref}")

    with pytest.raises(LookupError, match=r"action\[1\]: .*/AlsoGone"):
        list(walk_pathway(pathway, resolve, when=lambda s: s.action["title"] != "no", missing=missing))
    assert resolved == ["AlsoGone"]
    assert [w.target for w in walk_pathway(pathway, resolve)] == [None, None]  # without `missing`: leads nowhere


# ---------------------------------------------------------------- bundles and engine messages


def test_a_collection_bundle_reads_the_same_as_dict_and_as_text() -> None:
    """Verify that the two collection Bundle builders make the same Bundle."""
    resources = [{"resourceType": "Patient", "id": "p"}, {"resourceType": "Observation", "id": "o"}]
    texts = [json.dumps(r, separators=(",", ":")) for r in resources]
    assert json.loads(collection_bundle_json(texts)) == collection_bundle(resources)
    assert collection_bundle([]) == {"resourceType": "Bundle", "type": "collection", "entry": []}


def test_engine_messages_follow_cqf_messages_then_other_outcomes() -> None:
    """Verify that engine messages come from the outcomes cqf-messages names first, one per issue, text by fallback."""
    careplan = {
        "resourceType": "CarePlan",
        "extension": [{"url": CQF_MESSAGES_EXT, "valueReference": {"reference": "#second"}}],
        "contained": [
            {"resourceType": "OperationOutcome", "id": "first", "issue": [{"code": "exception"}]},
            {
                "resourceType": "OperationOutcome",
                "id": "second",
                "issue": [{"diagnostics": "boom"}, {"details": {"text": "detail"}}, "not an issue"],
            },
            {"resourceType": "RequestGroup", "id": "rg"},
        ],
    }
    assert engine_messages(careplan) == ["boom", "detail", "exception"]
    assert engine_messages({"resourceType": "CarePlan"}) == []
    assert issue_text({}) == "" and outcome_issues({"issue": "x"}) == []


# ---------------------------------------------------------------- codings, plan types, primary library


def test_codings_skip_what_lacks_a_string_system_or_code() -> None:
    """Verify that codings keeps codings with a string system and code, in order, and tolerates malformed input."""
    concept = {
        "coding": [
            {"system": "http://loinc.org", "code": "1558-6", "display": "Fasting glucose"},
            {"system": "http://loinc.org"},
            {"code": "x"},
            {"system": "http://snomed.info/sct", "code": 42},
            "not a coding",
            {"system": "http://snomed.info/sct", "code": "284449005"},
        ]
    }
    assert codings(concept) == ["http://loinc.org|1558-6", "http://snomed.info/sct|284449005"]
    assert coding_entries(concept)[0]["display"] == "Fasting glucose"
    bad_inputs: list[Any] = [None, "text", [], {"coding": None}, {"coding": "x"}, {"text": "only text"}]
    for bad in bad_inputs:
        assert codings(bad) == [] and coding_entries(bad) == []


@pytest.mark.parametrize(
    ("concept", "types", "pathway"),
    [
        ({"coding": [{"system": PLAN_TYPE_SYSTEM, "code": "clinical-protocol"}]}, {"clinical-protocol"}, True),
        ({"coding": [{"system": PLAN_TYPE_SYSTEM, "code": "eca-rule"}]}, {"eca-rule"}, False),
        ({"coding": [{"system": "http://example.org/other", "code": "clinical-protocol"}]}, set(), False),
        (
            {
                "coding": [
                    {"system": PLAN_TYPE_SYSTEM, "code": "eca-rule"},
                    {"system": PLAN_TYPE_SYSTEM, "code": "clinical-protocol"},
                ]
            },
            {"eca-rule", "clinical-protocol"},
            True,
        ),
        (None, set(), False),
        ("clinical-protocol", set(), False),
    ],
)
def test_plan_types_and_pathways(concept: Any, types: set[str], pathway: bool) -> None:
    """Verify that plan types are read from the plan-definition-type system only and a pathway is clinical-protocol."""
    plan = {"resourceType": "PlanDefinition", "id": "P", **({"type": concept} if concept is not None else {})}
    assert plan_types(plan) == types
    assert is_pathway(plan) is pathway


@pytest.mark.parametrize(
    ("library", "expected"),
    [
        (["http://example.org/Library/L|1.0.0"], "http://example.org/Library/L|1.0.0"),
        ([], None),
        (["http://example.org/Library/A", "http://example.org/Library/B"], None),
        ([7], None),
        ("http://example.org/Library/L", None),
        (None, None),
    ],
)
def test_primary_library_needs_exactly_one_canonical(library: Any, expected: str | None) -> None:
    """Verify that a plan has a primary library only when `library` holds exactly one canonical string."""
    plan: dict[str, Any] = {"resourceType": "PlanDefinition", "id": "P"}
    if library is not None:
        plan["library"] = library
    assert primary_library(plan) == expected


def test_plan_types_tolerates_malformed_coding() -> None:
    """Verify that a type whose coding is not a list gives no types instead of crashing."""
    assert plan_types({"type": {"coding": 0}}) == set()
    assert plan_types({"type": "clinical-protocol"}) == set()


def test_two_plans_without_ids_are_not_a_cycle() -> None:
    """Verify that two different plans lacking ids are not mistaken for one plan reaching itself."""
    inner: dict[str, Any] = {"resourceType": "PlanDefinition", "url": "http://x/inner", "action": [{"title": "leaf"}]}
    outer: dict[str, Any] = {
        "resourceType": "PlanDefinition",
        "action": [{"definitionCanonical": "http://x/inner"}],
    }
    steps = list(iter_actions(outer, {"http://x/inner": inner}.get))
    assert [s.path for s in steps] == ["action[0]", "action[0]"]
    assert steps[1].action == {"title": "leaf"}


def test_is_informational_means_no_activity_at_any_depth() -> None:
    """Verify that a plan is informational exactly when none of its actions, at any depth, references an
    ActivityDefinition (project safety rule 17: such a plan's CDS service is offered only when turned on)."""
    from guideline.core.fhir import is_informational

    r6 = {"resourceType": "PlanDefinition", "id": "R6", "action": [{"title": "Prognosis", "action": [{"title": "x"}]}]}
    r2 = {
        "resourceType": "PlanDefinition",
        "id": "R2",
        "action": [{"title": "Drug", "action": [{"definitionCanonical": "ActivityDefinition/GLProposeBromocriptine"}]}],
    }
    assert is_informational(r6)
    assert not is_informational(r2)
    assert is_informational({"resourceType": "PlanDefinition", "id": "empty"})
