"""Layer 4, references: unique ids and canonicals, resolvable canonical references, no action cycles."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from guideline.core.errors import ContentError, Finding
from guideline.core.fhir import FHIR_MODELINFO_URL, FHIRHELPERS_URL, ActionStep, iter_actions
from guideline.validation.subject import URI_SCHEME, Item, PathPart, Subject, list_of
from guideline.validation.terminology import CODE_SYSTEMS

REFERENCES = "references"

# Canonicals that legitimately live outside the package: url -> the only version we accept.
KNOWN_EXTERNAL: dict[str, str] = {FHIRHELPERS_URL: "4.0.1", FHIR_MODELINFO_URL: "4.0.1"}
# Namespaces of HL7 specifications and terminology: profiles, extensions, code systems and
# value sets there are published by HL7, not by this package.
KNOWN_EXTERNAL_PREFIXES = (
    "http://hl7.org/fhir/StructureDefinition/",
    "http://hl7.org/fhir/ValueSet/",
    "http://hl7.org/fhir/CodeSystem/",
    "http://hl7.org/fhir/uv/cpg/",
    "http://hl7.org/fhir/uv/crmi/",
    "http://terminology.hl7.org/CodeSystem/",
    "http://terminology.hl7.org/ValueSet/",
)

# element name -> resource types a canonical there may point to (None: any)
_CANONICAL_ELEMENTS: dict[str, tuple[str, ...] | None] = {
    "library": ("Library",),
    "definitionCanonical": ("ActivityDefinition", "PlanDefinition", "Questionnaire"),
    "valueSet": ("ValueSet",),
    "answerValueSet": ("ValueSet",),
    "instantiatesCanonical": None,
    "derivedFrom": None,
    "profile": ("StructureDefinition",),
    "targetProfile": ("StructureDefinition",),
}


def reference_findings(s: Subject) -> list[Finding]:
    """Layer 4: every artifact is identified once and every canonical reference resolves.

    Enforces FHIR R4 (4.0.1) Resource References, "Canonical URLs" (references.html#canonical:
    an absolute URL, optionally `|version`, naming one artifact) and "Contained Resources"
    (references.html#contained, `#id`); resource ids unique per type in a package (resource.html#id);
    the CRMI (STU1) Artifact Conventions rule that an artifact's url is `{base}/{Type}/{id}`; the
    target types each canonical element allows (PlanDefinition.library -> Library,
    action.definitionCanonical -> ActivityDefinition | PlanDefinition | Questionnaire); and no
    PlanDefinition (a CPG STU2 PathwayDefinition or RecommendationDefinition) reaching itself
    through its actions' definitionCanonical: PlanDefinition/$apply (R4, and CPG's pathway
    application) applies a referenced PlanDefinition in place, so a cycle never ends.
    Value sets and code systems named by CQL are left to layers 5 and 6, which report them once.
    """
    out: list[Finding] = []
    # Value sets named by CQL are reported once, at the CQL declaration (layer 5); code systems
    # named by CQL (Library depends-on) are judged by the terminology layer (layer 6).
    cql_value_sets = {d.get("id") for lib in s.libs.values() for d in lib.defs("valueSets")}
    cql_systems = {d.get("id") for lib in s.libs.values() for d in lib.defs("codeSystems")}
    seen_keys: dict[str, Item] = {}
    seen_urls: dict[str, Item] = {}
    for it in s.items:
        out.extend(_identity_findings(it, seen_keys, seen_urls))
        for path, value, allowed in _canonicals(it):
            if (value in cql_value_sets and not s.resolve(value)) or value.partition("|")[0] in cql_systems:
                continue
            msg = _contained_problem(it, value) if value.startswith("#") else _canonical_problem(s, value, allowed)
            if msg:
                out.append(Finding("error", it.file, it.at(*path), msg, REFERENCES))
    out.extend(_cycle_findings(s))
    return out


# ---------------------------------------------------------------- ids and urls


def _identity_findings(it: Item, seen_keys: dict[str, Item], seen_urls: dict[str, Item]) -> list[Finding]:
    """Duplicate ids and canonicals (the first holder wins), and the {base}/{Type}/{id} url rule."""
    out: list[Finding] = []
    if it.rid:
        other = seen_keys.get(it.key)
        if other is not None:
            out.append(
                Finding(
                    "error",
                    it.file,
                    it.at("id"),
                    f"duplicate resource {it.key}: also in {other.file}; ids must be unique per type",
                    REFERENCES,
                )
            )
        else:
            seen_keys[it.key] = it
    url = it.str_field("url")
    if url is None:
        return out
    uv = f"{url}|{it.str_field('version') or ''}"
    other = seen_urls.get(uv)
    if other is not None and other.key != it.key:
        out.append(
            Finding(
                "error",
                it.file,
                it.at("url"),
                f"duplicate canonical {url} (version {it.str_field('version')}): also used by "
                f"{other.key} in {other.file}; every artifact needs its own url",
                REFERENCES,
            )
        )
    seen_urls.setdefault(uv, it)
    if not it.external and it.rtype and it.rid and not url.endswith(f"/{it.rtype}/{it.rid}"):
        out.append(
            Finding(
                "error",
                it.file,
                it.at("url"),
                f"url '{url}' must end in /{it.rtype}/{it.rid} (CRMI artifact convention); "
                f"use {{base}}/{it.rtype}/{it.rid}",
                REFERENCES,
            )
        )
    return out


# ---------------------------------------------------------------- canonical references


def _walk(node: Any, path: list[PathPart]) -> Iterator[tuple[list[PathPart], Any, Any]]:
    """(path, key, value) for every object member under node."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield [*path, k], k, v
            yield from _walk(v, [*path, k])
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, [*path, i])


def _canonicals(item: Item) -> Iterator[tuple[list[PathPart], str, tuple[str, ...] | None]]:
    """(path, canonical, allowed target types) of every canonical reference in a resource."""
    for path, key, value in _walk(item.resource, []):
        if "text" in path[:1] or "contained" in path[:1]:
            continue
        if key in _CANONICAL_ELEMENTS:
            allowed = _CANONICAL_ELEMENTS[key]
            values = value if isinstance(value, list) else [value]
            for i, v in enumerate(values):
                if isinstance(v, str):
                    yield ([*path, i] if isinstance(value, list) else path), v, allowed
        elif key == "resource" and isinstance(value, str):
            # RelatedArtifact.resource (documentation, depends-on, citations)
            yield path, value, None


def _contained_problem(it: Item, value: str) -> str | None:
    """A `#id` reference names a contained resource (HAPI $apply accepts it for definitionCanonical)."""
    contained = {c.get("id") for c in list_of(it.resource, "contained") if isinstance(c, dict)}
    return None if value[1:] in contained else f"'{value}' names no contained resource; add it to contained"


def _canonical_problem(s: Subject, value: str, allowed: tuple[str, ...] | None) -> str | None:
    url, _, version = value.partition("|")
    if not URI_SCHEME.match(url):
        return (
            f"'{value}' is not an absolute canonical URL; write {{base}}/{url} (sources may use "
            "the relative 'Type/id' form only for resources in fhir_resources/, which build expands)"
        )
    targets = s.resolve(url)
    if targets:
        return _target_problem(value, version, targets, allowed)
    if url in KNOWN_EXTERNAL:
        want = KNOWN_EXTERNAL[url]
        if version and version != want:
            return f"'{value}': only version {want} of {url} is supported; use {url}|{want}"
        return None
    if url.startswith(KNOWN_EXTERNAL_PREFIXES) or url in CODE_SYSTEMS:
        return None
    tail = url.rstrip("/").rsplit("/", 2)
    if s.own(url) and len(tail) == 3:
        rtype, rid = tail[1], tail[2]
        return (
            f"'{value}' does not resolve: the package has no {rtype}/{rid}; add "
            f"fhir_resources/{rtype.lower()}/{rtype.lower()}-{rid}.json or fix the reference"
        )
    return (
        f"'{value}' does not resolve: it is neither in the package nor a known external canonical "
        "(FHIRHelpers, FHIR-ModelInfo, HL7 specifications and terminology); add the artifact to the package"
    )


def _target_problem(value: str, version: str, targets: list[Item], allowed: tuple[str, ...] | None) -> str | None:
    """A canonical that resolves in the package: is the target of an allowed type and version?"""
    types = {t.rtype for t in targets}
    if allowed and not types & set(allowed):
        return (
            f"'{value}' points to {targets[0].key}, but only {' / '.join(allowed)} resources may be "
            "referenced here; fix the reference"
        )
    versions = sorted({t.str_field("version") or "" for t in targets})
    if version and version not in versions:
        return (
            f"'{value}' asks for version {version}, but the package has {targets[0].key} version "
            f"{', '.join(versions)}; reference |{versions[0]} (or bump the target's version)"
        )
    return None


# ---------------------------------------------------------------- action cycles


def _cycle_findings(s: Subject) -> list[Finding]:
    """Each PlanDefinition action cycle once, located where it closes (see `_closing_edges`)."""
    plans = _identified_plans(s)
    out: list[Finding] = []
    reported: set[tuple[str, ...]] = set()
    for plan in plans.values():
        for cycle, finding in _closing_edges(plan, plans):
            if cycle in reported:
                continue
            reported.add(cycle)
            it = plans[finding.file]
            out.append(Finding("error", it.file, it.at_path(finding.location), finding.message, REFERENCES))
    return out


def _identified_plans(s: Subject) -> dict[str, Item]:
    """PlanDefinitions by `PlanDefinition/id`, only those whose id is present and unique.

    The action walker tells plans apart by id: two plans without an id (or sharing one, which
    `_identity_findings` reports) would look like one plan reaching itself.
    """
    counts: dict[str, int] = {}
    for it in s.items:
        counts[it.key] = counts.get(it.key, 0) + 1
    return {it.key: it for it in s.items if it.rtype == "PlanDefinition" and it.rid and counts[it.key] == 1}


def _closing_edges(start: Item, plans: dict[str, Item]) -> Iterator[tuple[tuple[str, ...], Finding]]:
    """(cycle, located finding) for the cycles reachable from `start`'s actions.

    `iter_actions` stops at the first cycle it meets (raising ContentError with one finding), so
    the walk is repeated without entering the actions already known to close a cycle, until it
    completes (each round blocks one more action, so this ends). A cycle is named by its plans,
    rotated to start at the smallest key, so that the same cycle met from another plan (closing
    at another action) is recognised.
    """
    by_url: dict[str, list[Item]] = {}
    for it in plans.values():
        by_url.setdefault(it.str_field("url") or "", []).append(it)
    key_of = {id(it.resource): key for key, it in plans.items()}

    def resolve(canonical: str) -> dict[str, Any] | None:
        url, _, version = canonical.partition("|")
        found = by_url.get(url, []) if url else []
        exact = [it for it in found if it.str_field("version") == version]
        return (exact or found)[0].resource if found else None

    blocked: set[tuple[str, str]] = set()
    trail: list[str] = []  # the plans from `start` down to the action being entered
    last: list[ActionStep] = []  # the action being entered: where a cycle closes

    def enter(step: ActionStep) -> bool:
        # Not entering a blocked action also skips its sub-actions, which a closing
        # definitionCanonical action rarely has; they are walked again once the cycle is fixed.
        del trail[step.depth :]
        trail.append(key_of[id(step.plan)])
        last[:] = [step]
        return (trail[-1], step.path) not in blocked

    while True:
        try:
            for _step in iter_actions(start.resource, resolve, enter=enter):
                pass
        except ContentError as e:
            step = last[0]
            blocked.add((trail[-1], step.path))
            target = resolve(str(step.action.get("definitionCanonical")))
            cycle = trail[trail.index(key_of[id(target)]) :] if target is not None else trail[-1:]
            low = cycle.index(min(cycle))
            yield (*cycle[low:], *cycle[:low]), e.findings[0]
            continue
        return
