"""Layer 7, conventions: CRMI shareable metadata and capabilities, CPG recommendation rules, CDS Hooks."""

from __future__ import annotations

import re
from typing import Any

from guideline.core.errors import Finding
from guideline.core.fhir import (
    KNOWLEDGE_CAPABILITY_EXT,
    PLAN_TYPE_SYSTEM,
    QUALITY_EXT,
    QUALITY_SYSTEM,
    STRENGTH_EXT,
    STRENGTH_SYSTEM,
    iter_actions,
)
from guideline.validation.subject import Item, Subject, list_of

CONVENTIONS = "conventions"

KNOWLEDGE_TYPES = (
    "Library",
    "PlanDefinition",
    "ActivityDefinition",
    "ValueSet",
    "CodeSystem",
    "Questionnaire",
    "Measure",
    "StructureDefinition",
)
REQUIRED_METADATA = ("url", "version", "name", "title", "status", "experimental", "description", "publisher")
CAPABILITIES = frozenset({"shareable", "computable", "publishable", "executable"})
CDS_PRIORITIES = frozenset({"routine", "urgent", "stat"})
_NAME = re.compile(r"^[A-Z][A-Za-z0-9_]{0,254}$")
# The rating extensions a recommendation action carries: (extension, code system, codes, what).
_RATINGS = (
    (STRENGTH_EXT, STRENGTH_SYSTEM, frozenset({"strong", "weak"}), "strength of recommendation"),
    (QUALITY_EXT, QUALITY_SYSTEM, frozenset({"high", "moderate", "low", "very-low"}), "quality of evidence"),
)


def convention_findings(s: Subject) -> list[Finding]:
    """Layer 7: the package's own knowledge artifacts follow CRMI and CPG conventions.

    Enforces CRMI (STU1) shareable artifact profiles (crmi-shareable*: url, version, name, title,
    status, experimental, description and publisher present) and its Artifact Conventions name
    rule (a PascalCase computable name), and the cqf-knowledgeCapability extension with a code
    from its value set (shareable | computable | publishable | executable). For PlanDefinitions:
    every action priority maps to a CDS Hooks 2.0 card indicator (routine/urgent/stat, which HAPI
    turns into info/warning/critical); and a CPG STU2 RecommendationDefinition (type eca-rule,
    cpg-recommendationdefinition / cpg-computableplandefinition) has at least one action, a
    named-event trigger, and on each action a strength of recommendation and quality of
    evidence rating (cqf-strengthOfRecommendation, cqf-qualityOfEvidence), a quoted source
    (documentation) and a priority. A Measure is a CPG computable metric (scoring, improvementNotation,
    populations, one library). Artifacts published elsewhere (FHIRHelpers) are not judged.
    """
    out: list[Finding] = []
    for it in s.items:
        if it.external or it.rtype not in KNOWLEDGE_TYPES:
            continue
        out.extend(_metadata_findings(it))
        out.extend(_capability_findings(it))
        if it.rtype == "PlanDefinition":
            out.extend(_plan_conventions(it))
        if it.rtype == "Measure":
            out.extend(_measure_conventions(it))
    return out


def _measure_conventions(it: Item) -> list[Finding]:
    """CPG STU2 computable metric (cpg-computablemetric): scoring and improvementNotation 1..1, group 1..* each
    with population 1..*, library at most one (HAPI's $evaluate-measure reads the first only)."""
    r = it.resource
    missing = [k for k in ("scoring", "improvementNotation") if not isinstance(r.get(k), dict)]
    groups = list_of(r, "group")
    if not groups or any(not isinstance(g, dict) or not list_of(g, "population") for g in groups):
        missing.append("group with population")
    out = [
        Finding(
            "error",
            it.file,
            it.at(k.split(" ")[0]),
            f"Measure {it.rid} has no {k} (CPG computable metric, cpg-computablemetric); add it",
            CONVENTIONS,
        )
        for k in missing
    ]
    if len(list_of(r, "library")) > 1:
        out.append(
            Finding(
                "error",
                it.file,
                it.at("library"),
                f"Measure {it.rid} names {len(list_of(r, 'library'))} libraries; a CPG computable metric has at most "
                "one (keep the one whose defines the populations name)",
                CONVENTIONS,
            )
        )
    return out


def _coded(value: Any) -> set[tuple[str, str]]:
    """(system, code) pairs of a CodeableConcept."""
    codings = value.get("coding") if isinstance(value, dict) else None
    return (
        {(str(c.get("system")), str(c.get("code"))) for c in codings if isinstance(c, dict)}
        if isinstance(codings, list)
        else set()
    )


def _extensions(node: dict[str, Any], url: str) -> list[dict[str, Any]]:
    ext = node.get("extension")
    return [e for e in ext if isinstance(e, dict) and e.get("url") == url] if isinstance(ext, list) else []


# ---------------------------------------------------------------- every knowledge artifact


def _metadata_findings(it: Item) -> list[Finding]:
    """The CRMI shareable metadata is present, and the name is a computable identifier."""
    out: list[Finding] = []
    r = it.resource
    for name in REQUIRED_METADATA:
        v = r.get(name)
        if v is None or v == "":
            out.append(
                Finding(
                    "error",
                    it.file,
                    it.at(name),
                    f"{it.rtype} {it.rid} has no {name} (CPG/CRMI shareable artifact metadata); add it",
                    CONVENTIONS,
                )
            )
    name_v = r.get("name")
    if isinstance(name_v, str) and name_v and not _NAME.match(name_v):
        out.append(
            Finding(
                "warning",
                it.file,
                it.at("name"),
                f"name '{name_v}' should be PascalCase [A-Z][A-Za-z0-9_]* (CRMI name rule), "
                "usable as a computable identifier",
                CONVENTIONS,
            )
        )
    return out


def _capability_findings(it: Item) -> list[Finding]:
    """At least one knowledge capability extension, each with a known code."""
    out: list[Finding] = []
    if not _extensions(it.resource, KNOWLEDGE_CAPABILITY_EXT):
        out.append(
            Finding(
                "error",
                it.file,
                it.at("extension"),
                f"{it.rtype} {it.rid} has no knowledge capability: add extension "
                f'{{"url": "{KNOWLEDGE_CAPABILITY_EXT}", "valueCode": "shareable"}} '
                "(and computable/publishable/executable as they apply)",
                CONVENTIONS,
            )
        )
    for i, e in enumerate(list_of(it.resource, "extension")):
        code = e.get("valueCode") if isinstance(e, dict) else None
        if (
            isinstance(e, dict)
            and e.get("url") == KNOWLEDGE_CAPABILITY_EXT
            and not (isinstance(code, str) and code in CAPABILITIES)
        ):
            out.append(
                Finding(
                    "error",
                    it.file,
                    it.at("extension", i, "valueCode"),
                    f"knowledge capability {e.get('valueCode')!r} is not one of {', '.join(sorted(CAPABILITIES))}",
                    CONVENTIONS,
                )
            )
    return out


# ---------------------------------------------------------------- PlanDefinitions


def _plan_conventions(it: Item) -> list[Finding]:
    """Priorities of every action; for an eca-rule (a recommendation), its actions and trigger."""
    out = _priority_findings(it)
    if (PLAN_TYPE_SYSTEM, "eca-rule") not in _coded(it.resource.get("type")):
        return out
    actions = list_of(it.resource, "action")
    has_trigger = False
    for i, a in enumerate(actions):
        if not isinstance(a, dict):
            continue
        has_trigger = has_trigger or any(
            isinstance(t, dict) and t.get("type") == "named-event" and isinstance(t.get("name"), str)
            for t in list_of(a, "trigger")
        )
        out.extend(_recommendation_action(it, i, a))
    if actions and not has_trigger:
        out.append(
            Finding(
                "error",
                it.file,
                it.at("action"),
                "eca-rule PlanDefinition has no named-event trigger, so no CDS service is registered; "
                'add trigger [{"type": "named-event", "name": "patient-view"}] to an action',
                CONVENTIONS,
            )
        )
    elif not actions:
        out.append(
            Finding(
                "error",
                it.file,
                it.at("action"),
                "recommendation has no action (cpg-computableplandefinition requires 1..*)",
                CONVENTIONS,
            )
        )
    return out


def _priority_findings(it: Item) -> list[Finding]:
    """Every action's priority (nested actions too) has a CDS Hooks card indicator."""
    out: list[Finding] = []
    for step in iter_actions(it.resource):
        p = step.action.get("priority")
        if isinstance(p, str) and p not in CDS_PRIORITIES:
            out.append(
                Finding(
                    "error",
                    it.file,
                    it.at_path(step.path, "priority"),
                    f"priority '{p}' has no CDS Hooks card indicator (HAPI throws 'Invalid priority "
                    "code'); use routine (info), urgent (warning) or stat (critical)",
                    CONVENTIONS,
                )
            )
    return out


def _recommendation_action(it: Item, i: int, a: dict[str, Any]) -> list[Finding]:
    """A recommendation's action i: its two ratings, a quoted source, a priority."""
    out = _rating_findings(it, i, a)
    docs = list_of(a, "documentation")
    quoted = [d for d in docs if isinstance(d, dict) and (d.get("citation") or d.get("display"))]
    if not quoted:
        out.append(
            Finding(
                "error",
                it.file,
                it.at("action", i, "documentation"),
                f'recommendation action {i} quotes no source: add documentation [{{"type": '
                '"citation", "display": "<source>", "citation": "<quoted text>"}]',
                CONVENTIONS,
            )
        )
    elif not (isinstance(docs[0], dict) and docs[0].get("display")):
        out.append(
            Finding(
                "warning",
                it.file,
                it.at("action", i, "documentation", 0, "display"),
                "documentation[0].display becomes the CDS card's source label; set it",
                CONVENTIONS,
            )
        )
    if "priority" not in a:
        out.append(
            Finding(
                "warning",
                it.file,
                it.at("action", i, "priority"),
                "recommendation action has no priority; set routine, urgent or stat (it becomes "
                "the CDS card indicator)",
                CONVENTIONS,
            )
        )
    return out


def _rating_findings(it: Item, i: int, a: dict[str, Any]) -> list[Finding]:
    """The strength of recommendation and quality of evidence ratings of action i, each coded."""
    out: list[Finding] = []
    for url, system, codes, what in _RATINGS:
        exts = _extensions(a, url)
        if not exts:
            out.append(
                Finding(
                    "error",
                    it.file,
                    it.at("action", i, "extension"),
                    f"recommendation action {i} has no {what} rating: add extension {url} with "
                    f"valueCodeableConcept from {system} ({' | '.join(sorted(codes))})",
                    CONVENTIONS,
                )
            )
            continue
        pairs = _coded(exts[0].get("valueCodeableConcept"))
        if not any(sys == system and code in codes for sys, code in pairs):
            out.append(
                Finding(
                    "error",
                    it.file,
                    it.at("action", i, "extension"),
                    f"{what} rating must be a code from {system} ({' | '.join(sorted(codes))}); "
                    f"got {sorted(pairs) or 'no coding'}",
                    CONVENTIONS,
                )
            )
    return out
