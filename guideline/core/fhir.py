"""FHIR facts every stage shares: spec URLs, codings, a plan's type and primary library, the action walker."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from guideline.core.errors import ContentError, Finding

# ---------------------------------------------------------------- canonical URLs (one place)

# Libraries the CQL toolchain provides rather than the package.
FHIRHELPERS_URL = "http://hl7.org/fhir/Library/FHIRHelpers"
FHIR_MODELINFO_URL = "http://fhir.org/guides/cqf/common/Library/FHIR-ModelInfo"
# Extensions (FHIR R4 core extensions of the cqf family, used by CPG and CRMI).
KNOWLEDGE_CAPABILITY_EXT = "http://hl7.org/fhir/StructureDefinition/cqf-knowledgeCapability"
CQL_OPTIONS_EXT = "http://hl7.org/fhir/StructureDefinition/cqf-cqlOptions"
STRENGTH_EXT = "http://hl7.org/fhir/StructureDefinition/cqf-strengthOfRecommendation"
QUALITY_EXT = "http://hl7.org/fhir/StructureDefinition/cqf-qualityOfEvidence"
CQF_MESSAGES_EXT = "http://hl7.org/fhir/StructureDefinition/cqf-messages"
OO_SOURCE_EXT = "http://hl7.org/fhir/StructureDefinition/operationoutcome-issue-source"
OO_LINE_EXT = "http://hl7.org/fhir/StructureDefinition/operationoutcome-issue-line"
OO_COL_EXT = "http://hl7.org/fhir/StructureDefinition/operationoutcome-issue-col"
# Code systems (terminology.hl7.org).
PLAN_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/plan-definition-type"
LIBRARY_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/library-type"
STRENGTH_SYSTEM = "http://terminology.hl7.org/CodeSystem/recommendation-strength"
QUALITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/evidence-quality"
# Expression.language for "the name of a CQL define"; HAPI (clinical-reasoning) also accepts the
# older opioid spelling with a dot, so both are read as the same language.
CQL_IDENTIFIER_LANGUAGES = frozenset({"text/cql-identifier", "text/cql.identifier"})

# ---------------------------------------------------------------- codings and plans


def coding_entries(concept: Any) -> list[dict[str, Any]]:
    """The codings of a CodeableConcept that carry a string system and code, as they are (display kept).

    Anything else (a concept that is not an object, a coding without system or code) is skipped:
    validation reports malformed codings with their location, every other reader just ignores them.
    """
    if not isinstance(concept, dict):
        return []
    entries = concept.get("coding")
    if not isinstance(entries, list):
        return []
    return [
        c
        for c in entries
        if isinstance(c, dict) and isinstance(c.get("system"), str) and isinstance(c.get("code"), str)
    ]


def codings(concept: Any) -> list[str]:
    """The `system|code` strings of a CodeableConcept's codings (codings lacking either are skipped)."""
    return [f"{c['system']}|{c['code']}" for c in coding_entries(concept)]


def plan_types(plan: dict[str, Any]) -> set[str]:
    """The plan-definition-type codes of a PlanDefinition (e.g. `eca-rule`, `clinical-protocol`)."""
    concept = plan.get("type")
    entries = concept.get("coding") if isinstance(concept, dict) else None
    if not isinstance(entries, list):
        return set()  # malformed content is validation's to report, not a reason to crash here
    return {str(c.get("code")) for c in entries if isinstance(c, dict) and c.get("system") == PLAN_TYPE_SYSTEM}


def is_pathway(plan: dict[str, Any]) -> bool:
    """A CPG PathwayDefinition: a PlanDefinition of type `clinical-protocol`."""
    return "clinical-protocol" in plan_types(plan)


def is_recommendation(resource: dict[str, Any]) -> bool:
    """A recommendation plan: a PlanDefinition that is not a pathway (CPG RecommendationDefinition or ECA rule)."""
    return resource.get("resourceType") == "PlanDefinition" and not is_pathway(resource)


def is_informational(plan: dict[str, Any]) -> bool:
    """A recommendation plan that proposes nothing: no action, at any depth, references an ActivityDefinition.

    Project safety rule 17: the server offers such a plan's CDS service (R6) only when its
    `guideline.cds.informational-cards` setting is on (the server's `InformationalCards` reads the same rule).
    """
    return not any(
        "ActivityDefinition/" in str(step.action.get("definitionCanonical") or "") for step in iter_actions(plan)
    )


def primary_library(plan: dict[str, Any]) -> str | None:
    """The canonical of a PlanDefinition's one primary Library, or None unless there is exactly one.

    CPG evaluates an action's conditions and dynamic values in the plan's primary library, so a plan
    with none or several cannot be evaluated unambiguously.
    """
    libs = plan.get("library")
    if not isinstance(libs, list) or len(libs) != 1 or not isinstance(libs[0], str):
        return None
    return libs[0]


def collection_bundle(resources: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """A Bundle of type `collection` holding the resources (how a patient's record travels to an engine)."""
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}


def collection_bundle_json(texts: Iterable[str]) -> str:
    """`collection_bundle` as JSON text around resources' JSON texts, as they are (no parsing a population twice)."""
    return (
        '{"resourceType":"Bundle","type":"collection","entry":[' + ",".join(f'{{"resource":{t}}}' for t in texts) + "]}"
    )


# ---------------------------------------------------------------- what engines and servers say


def outcome_issues(outcome: Any) -> list[dict[str, Any]]:
    """The issues of an OperationOutcome (or of anything shaped like one), malformed entries skipped."""
    issues = outcome.get("issue") if isinstance(outcome, dict) else None
    return [i for i in issues if isinstance(i, dict)] if isinstance(issues, list) else []


def issue_text(issue: dict[str, Any]) -> str:
    """What an OperationOutcome issue says: its diagnostics, else its details' text, else its code ('' if none)."""
    details = issue.get("details")
    text = issue.get("diagnostics") or (details.get("text") if isinstance(details, dict) else None)
    return str(text or issue.get("code") or "")


def engine_messages(resource: dict[str, Any]) -> list[str]:
    """What a clinical-reasoning engine reported while producing `resource` (a CarePlan from $apply).

    The engine puts its errors in contained OperationOutcomes, named by `cqf-messages` extensions
    (CPG, "Messages"); an OperationOutcome contained without that pointer counts too. One entry
    per issue, in the order the extensions name them.
    """
    contained = {c.get("id"): c for c in resource.get("contained", []) if isinstance(c, dict)}
    refs = [
        str((e.get("valueReference") or {}).get("reference", "")).lstrip("#")
        for e in resource.get("extension", [])
        if isinstance(e, dict) and e.get("url") == CQF_MESSAGES_EXT
    ]
    outcomes = [contained[r] for r in refs if r in contained]
    outcomes += [c for c in contained.values() if c.get("resourceType") == "OperationOutcome" and c not in outcomes]
    return [issue_text(i) for o in outcomes for i in outcome_issues(o)]


# ---------------------------------------------------------------- the action walker


@dataclass(frozen=True)
class ActionStep:
    """One action met by `iter_actions`: the plan holding it, its JSON path there, and the action."""

    plan: dict[str, Any]
    path: str
    action: dict[str, Any]
    depth: int  # how many definitionCanonical hops from the first plan

    @property
    def top(self) -> bool:
        """Whether the action is one of its plan's own actions (`action[i]`), not a sub-action."""
        return "." not in self.path


Resolve = Callable[[str], dict[str, Any] | None]


def _key(plan: dict[str, Any]) -> str:
    rtype = plan.get("resourceType", "PlanDefinition")
    pid = plan.get("id")
    if isinstance(pid, str) and pid:
        return f"{rtype}/{pid}"
    # Without an id, two different plans must not look like one plan reaching itself: the object
    # identity tells them apart (a resolved plan is the same object each time it is resolved).
    return f"{rtype} without id (#{id(plan):x})"


def action_cycle_error(plan: dict[str, Any], path: str, chain: list[str]) -> ContentError:
    """The located error for an action that reaches a plan already on the way to it."""
    message = (
        f"{path}.definitionCanonical reaches {chain[-1]} again ({' -> '.join(chain)}); "
        "a PlanDefinition must not reach itself through its actions: remove or retarget this reference"
    )
    key = _key(plan)
    return ContentError(
        f"{key}: {message}", [Finding("error", key, f"{path}.definitionCanonical", message, "references")]
    )


def iter_actions(
    plan: dict[str, Any],
    resolve: Resolve | None = None,
    *,
    enter: Callable[[ActionStep], bool] | None = None,
    when: Callable[[ActionStep], bool] | None = None,
) -> Iterator[ActionStep]:
    """Every action of `plan`, depth-first in document order, with its JSON path.

    Sub-actions (`action.action`) follow their parent. With `resolve`, an action whose
    `definitionCanonical` names a PlanDefinition is followed into that plan's actions (after the
    action itself and before its sub-actions), which is how a pathway reaches its recommendations.
    `enter(step)`, asked after a step is yielded, decides whether to descend below it (default:
    always). `when(step)`, asked before, filters: a step it rejects is neither yielded nor
    descended into, so a walk that evaluates applicability passes its check here.

    Raises ContentError, located at the offending `definitionCanonical`, when a plan reaches itself
    (directly or through others): a cycle would otherwise recurse without end.
    """
    yield from _iter(plan, plan.get("action"), "action", _Walk(resolve, enter, when), [_key(plan)], 0)


@dataclass(frozen=True)
class _Walk:
    """The callbacks of one `iter_actions` walk."""

    resolve: Resolve | None
    enter: Callable[[ActionStep], bool] | None
    when: Callable[[ActionStep], bool] | None


def _iter(
    plan: dict[str, Any],
    actions: Any,
    base: str,
    walk: _Walk,
    chain: list[str],
    depth: int,
) -> Iterator[ActionStep]:
    if not isinstance(actions, list):
        return
    for i, action in enumerate(actions):
        if not isinstance(action, dict):
            continue
        step = ActionStep(plan, f"{base}[{i}]", action, depth)
        if walk.when is not None and not walk.when(step):
            continue
        yield step
        if walk.enter is not None and not walk.enter(step):
            continue
        ref = action.get("definitionCanonical")
        target = walk.resolve(ref) if walk.resolve is not None and isinstance(ref, str) else None
        if target is not None and target.get("resourceType") == "PlanDefinition":
            key = _key(target)
            if key in chain:
                raise action_cycle_error(plan, step.path, [*chain, key])
            yield from _iter(target, target.get("action"), "action", walk, [*chain, key], depth + 1)
        yield from _iter(plan, action.get("action"), f"{step.path}.action", walk, chain, depth)


# ---------------------------------------------------------------- the pathway walk


@dataclass(frozen=True)
class PathwayStep:
    """One action a pathway reaches, and what its `definitionCanonical` names (None if nothing or no reference)."""

    step: ActionStep
    target: dict[str, Any] | None

    @property
    def recommendation(self) -> dict[str, Any] | None:
        """The recommendation PlanDefinition the action leads to, if it leads to one."""
        return self.target if self.target is not None and is_recommendation(self.target) else None


def walk_pathway(
    pathway: dict[str, Any],
    resolve: Resolve,
    *,
    when: Callable[[ActionStep], bool] | None = None,
    missing: Callable[[ActionStep, str], Exception] | None = None,
) -> Iterator[PathwayStep]:
    """Every action of a pathway, nested pathways followed, each with what its definitionCanonical names.

    This is how a pathway reaches its recommendations (CPG PathwayDefinition): the walk goes into
    a referenced plan only when it is a pathway itself; a recommendation's own actions are its
    evaluator's business. `resolve` finds the resource a canonical names (None if none).
    `when(step)`, if given, decides whether an action counts: one that does not is neither
    yielded nor descended into, and its reference is never resolved (an evaluator passes its
    applicability check). `missing(step, ref)`, if given, is raised for a reference `resolve`
    cannot find; without it such an action leads nowhere. A pathway that reaches itself is a
    ContentError at the reference that closes the loop (see `iter_actions`).
    """

    def nested(ref: str) -> dict[str, Any] | None:
        target = resolve(ref)
        return target if target is not None and is_pathway(target) else None

    for step in iter_actions(pathway, nested, when=when):
        ref = step.action.get("definitionCanonical")
        target = resolve(ref) if isinstance(ref, str) else None
        if target is None and isinstance(ref, str) and missing is not None:
            raise missing(step, ref)
        yield PathwayStep(step, target)
