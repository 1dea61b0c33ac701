"""The page model of the rendered site: recommendations, conditions in plain language, CQL, value sets, cases.

A page's recommendation and activities hold the evaluation model's (`guideline.evaluation.model`)
for what they share with `recommend` (id, card, what each activity proposes, informational), and
add only what the pages show besides.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from guideline.content.package import Package
from guideline.core.errors import BadInputError, ContentError, Finding
from guideline.core.fhir import (
    CQL_IDENTIFIER_LANGUAGES,
    QUALITY_EXT,
    STRENGTH_EXT,
    ActionStep,
    coding_entries,
    is_pathway,
    iter_actions,
    primary_library,
)
from guideline.evaluation import model as evaluation
from guideline.evaluation.walk import pathways

# The full scales of the two HL7 code systems (the GRADE categories), shown beside each rating
# so a reader sees where "weak" and "very-low" sit.
STRENGTH_SCALE = ("strong", "weak")
QUALITY_SCALE = ("high", "moderate", "low", "very-low")

# Short names for the code systems the package uses; anything else is shown by its URL.
SYSTEM_NAMES = {
    "http://loinc.org": "LOINC",
    "http://snomed.info/sct": "SNOMED CT",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "http://www.whocc.no/atc": "ATC",
    "http://www.orpha.net": "Orphanet",
    "http://hl7.org/fhir/sid/icd-10": "ICD-10",
    "http://hl7.org/fhir/uv/cpg/CodeSystem/cpg-activity-type-cs": "CPG activity type",
    "http://terminology.hl7.org/CodeSystem/condition-clinical": "Condition clinical status",
    "http://terminology.hl7.org/CodeSystem/condition-ver-status": "Condition verification status",
}
FHIRHELPERS = "FHIRHelpers"
# Plain-language trees stop expanding named definitions below this depth (the CQL is shown anyway).
PLAIN_DEPTH = 4


# ---------------------------------------------------------------- page model


@dataclass(frozen=True)
class Coding:
    """A coding as the pages show it: system (with a short name), code and display."""

    system: str
    code: str
    display: str = ""

    @property
    def system_name(self) -> str:
        return SYSTEM_NAMES.get(self.system, self.system)

    @property
    def label(self) -> str:
        return f"{self.system_name} {self.code}"


@dataclass(frozen=True)
class Rating:
    """A strength-of-recommendation or quality-of-evidence rating from an action's extension."""

    code: str
    display: str
    text: str
    system: str
    extension: str


@dataclass(frozen=True)
class Quote:
    """A passage of the source, verbatim, and where it is from."""

    text: str
    cite: str


@dataclass(frozen=True)
class Definition:
    """A CQL definition (define, function or parameter) with its source text."""

    library: str
    name: str
    kind: str  # define | function | parameter
    cql: str

    @property
    def anchor(self) -> str:
        return anchor("def", self.library, self.name)

    @property
    def qualified(self) -> str:
        return f'{self.library}."{self.name}"'


@dataclass(frozen=True)
class Plain:
    """A condition in plain language: all/any/not over named definitions; CQL text at the leaves."""

    op: str  # all | any | not | ref | cql
    text: str = ""
    anchor: str = ""
    children: tuple[Plain, ...] = ()


@dataclass(frozen=True)
class Condition:
    """An applicability condition: the CQL define that decides it, in plain language and on one line."""

    definition: Definition
    plain: Plain
    summary: str  # one line, for the diagram


@dataclass(frozen=True)
class Activity:
    """An activity on a recommendation's page: what it proposes (the evaluation model) and what the page shows."""

    proposal: evaluation.Activity  # the request $apply creates and its codes, as `recommend` reports them
    title: str
    action_title: str
    action_description: str
    description: str
    codes: tuple[Coding, ...]  # proposal.codes, with their displays
    codings: tuple[tuple[str, Coding], ...]  # every coding on the definition: (element, coding)
    text: str  # message text (CommunicationRequest) or dosage text
    intent: str
    priority: str
    condition: Condition | None
    json_href: str

    @property
    def definition_id(self) -> str:
        return self.proposal.definition

    @property
    def kind(self) -> str:
        return self.proposal.resource_type

    @property
    def order(self) -> bool:
        return self.proposal.order

    @property
    def anchor(self) -> str:
        return anchor("act", self.definition_id)


@dataclass(frozen=True)
class ValueSet:
    """A value set the logic uses, with its expansion."""

    id: str
    url: str
    title: str
    description: str
    expansion: tuple[Coding, ...]
    json_href: str

    @property
    def anchor(self) -> str:
        return anchor("vs", self.id)


@dataclass(frozen=True)
class CodeUse:
    """A CQL code declaration the logic uses directly."""

    library: str
    name: str
    coding: Coding


@dataclass(frozen=True)
class DynamicText:
    """A card element computed per patient by a CQL define (an action's dynamicValue)."""

    path: str
    definition: Definition


@dataclass(frozen=True)
class Recommendation:
    """A recommendation's page: its card as `recommend` reports it when every action applies, and what is behind it.

    `card` is the evaluation model's recommendation (id, title and text of the card, source, and
    every activity's proposal); the other fields are the evidence, logic and cases the page shows.
    """

    card: evaluation.Recommendation
    short_title: str  # the pathway's action title
    title: str  # the PlanDefinition title
    description: str
    usage: str
    quotes: tuple[Quote, ...]
    strength: Rating | None
    quality: Rating | None
    triggers: tuple[str, ...]
    conditions: tuple[Condition, ...]
    activities: tuple[Activity, ...]  # the page's view of card.activities, in the same order
    dynamic: tuple[DynamicText, ...]
    definitions: tuple[Definition, ...]
    value_sets: tuple[ValueSet, ...]
    codes: tuple[CodeUse, ...]
    json_links: tuple[tuple[str, str], ...]  # (label, href)
    fires_in: tuple[str, ...] = ()
    silent_in: tuple[str, ...] = ()
    safety_rules: tuple[SafetyRule, ...] = ()  # project safety rules that shape this recommendation

    @property
    def id(self) -> str:
        return self.card.id

    @property
    def informational(self) -> bool:
        return self.card.informational

    @property
    def page(self) -> str:
        return f"rec-{self.id}.html"


@dataclass(frozen=True)
class Case:
    """A test case: its scenario, evaluation time, expected recommendations and define values."""

    id: str
    description: str
    at: str
    expected: tuple[tuple[str, tuple[str, ...]], ...]  # (PlanDefinition id, activity codes)
    defines: tuple[tuple[str, str, str], ...]  # (library, define, JSON value)
    patient_href: str

    @property
    def anchor(self) -> str:
        return anchor("case", self.id)


@dataclass(frozen=True)
class SafetyRule:
    """A project safety rule (the project's addition, never the source's words) and its basis."""

    number: int
    text: str
    basis: str

    @property
    def anchor(self) -> str:
        return anchor("safety-rule", str(self.number))


# Project safety rules are marked on the artifacts as relatedArtifact type `documentation` with this
# label (docs/traceability.md section 5); the source itself is cited with type `citation`.
_SAFETY_LABEL = re.compile(r"^project-safety-rule-(\d+)$")
_SAFETY_PREFIX = re.compile(r"^Project safety rule \d+ \(not from the source\):\s*")


def safety_rules(resource: dict[str, Any]) -> tuple[SafetyRule, ...]:
    """The project safety rules a resource declares, in rule order (none when it declares none)."""
    rules: dict[int, SafetyRule] = {}
    for ra in resource.get("relatedArtifact") or []:
        if not isinstance(ra, dict) or ra.get("type") != "documentation":
            continue
        m = _SAFETY_LABEL.match(str(ra.get("label", "")))
        if m:
            text = _SAFETY_PREFIX.sub("", str(ra.get("display", "")))
            basis = str(ra.get("citation", "")).removeprefix("Basis: ")
            rules.setdefault(int(m.group(1)), SafetyRule(int(m.group(1)), text, basis))
    return tuple(rules[n] for n in sorted(rules))


@dataclass(frozen=True)
class TraceRow:
    """A row of the traceability table: a source passage, what encodes it, and the cases where it fires."""

    quote: Quote
    artifact: str
    page: str
    encoded: tuple[str, ...]
    cases: tuple[str, ...]
    cases_note: str


@dataclass(frozen=True)
class ResourceLink:
    """A package resource in the raw-JSON listing."""

    resource_type: str
    id: str
    title: str
    version: str
    href: str


@dataclass(frozen=True)
class Site:
    """Everything the site shows: package metadata, the pathway, its recommendations, cases and traceability."""

    title: str
    name: str
    package_id: str
    version: str
    status: str
    experimental: bool
    date: str
    publisher: str
    canonical: str
    license: str
    fhir_version: str
    citations: tuple[Quote, ...]
    pathway_id: str
    pathway_title: str
    pathway_description: str
    pathway_usage: str
    pathway_quotes: tuple[Quote, ...]
    population: Condition
    triggers: tuple[str, ...]
    recommendations: tuple[Recommendation, ...]
    cases: tuple[Case, ...]
    trace: tuple[TraceRow, ...]
    resources: tuple[ResourceLink, ...]
    definitions: tuple[Definition, ...] = field(default=())  # the pathway's own CQL
    safety_rules: tuple[SafetyRule, ...] = ()  # every project safety rule, as the pathway lists them


def anchor(prefix: str, *parts: str) -> str:
    """A stable, URL-safe fragment id."""
    body = "-".join(re.sub(r"[^A-Za-z0-9_]+", "-", p).strip("-") for p in parts)
    return f"{prefix}-{body}"


def json_href(resource: dict[str, Any]) -> str:
    """Where the site keeps a resource's raw JSON (relative to the site root)."""
    return f"json/{resource['resourceType']}-{resource['id']}.json"


def humanize(name: str) -> str:
    """'Has Prolactin Excess Features' -> 'has prolactin excess features' (acronyms like HbA1c, GL kept)."""
    return " ".join(w.lower() if w[:1].isupper() and (len(w) == 1 or w[1:].islower()) else w for w in name.split())


# ---------------------------------------------------------------- CQL logic (ELM + source)


@dataclass
class _Closure:
    definitions: dict[tuple[str, str], Definition] = field(default_factory=dict)
    value_sets: dict[str, None] = field(default_factory=dict)  # ordered set of URLs
    codes: dict[tuple[str, str], None] = field(default_factory=dict)


class _Logic:
    """The package's CQL: ELM for structure, the Library's text/cql for what readers see."""

    def __init__(self, pkg: Package) -> None:
        self.pkg = pkg
        self.elm = {n: e["library"] for n, e in pkg.elm.items()}
        self.lines: dict[str, list[str]] = {}
        for r in pkg.resources:
            if r["resourceType"] != "Library" or r.get("name") not in self.elm:
                continue
            for c in r.get("content", []):
                if c.get("contentType") == "text/cql" and isinstance(c.get("data"), str):
                    self.lines[r["name"]] = base64.b64decode(c["data"]).decode("utf-8").splitlines()

    def includes(self, lib: str) -> dict[str, str]:
        defs = (self.elm[lib].get("includes") or {}).get("def", [])
        return {d.get("localIdentifier", d["path"]): d["path"] for d in defs}

    def target(self, lib: str, node: dict[str, Any]) -> str:
        alias = node.get("libraryName")
        return self.includes(lib).get(alias, alias) if isinstance(alias, str) else lib

    def defs(self, lib: str, section: str) -> list[dict[str, Any]]:
        defs: list[dict[str, Any]] = (self.elm.get(lib, {}).get(section) or {}).get("def", [])
        return defs

    def statements(self, lib: str, name: str) -> list[dict[str, Any]]:
        return [s for s in self.defs(lib, "statements") if s.get("name") == name]

    def source(self, lib: str, locator: str | None) -> str:
        """The CQL lines a locator spans, with the line comments directly above (they say why)."""
        lines = self.lines.get(lib)
        m = re.match(r"^(\d+):(\d+)-(\d+):(\d+)$", locator or "")
        if not lines or not m:
            return ""
        first, last = int(m.group(1)), int(m.group(3))
        start = first - 1
        while start > 0 and lines[start - 1].lstrip().startswith("//"):
            start -= 1
        return "\n".join(lines[start:last]).rstrip()

    def fragment(self, lib: str, locator: str | None) -> str:
        """The exact CQL text of an expression (a locator's span), on one line."""
        lines = self.lines.get(lib)
        m = re.match(r"^(\d+):(\d+)-(\d+):(\d+)$", locator or "")
        if not lines or not m:
            return ""
        l1, c1, l2, c2 = (int(g) for g in m.groups())
        if l1 == l2:
            text = lines[l1 - 1][c1 - 1 : c2]
        else:
            text = "\n".join([lines[l1 - 1][c1 - 1 :], *lines[l1 : l2 - 1], lines[l2 - 1][:c2]])
        return " ".join(text.split())

    def definition(self, lib: str, name: str) -> Definition | None:
        stmts = self.statements(lib, name)
        if stmts:
            kind = "function" if stmts[0].get("type") == "FunctionDef" else "define"
            cql = "\n\n".join(self.source(lib, s.get("locator")) for s in stmts)
            return Definition(lib, name, kind, cql)
        for p in self.defs(lib, "parameters"):
            if p.get("name") == name:
                return Definition(lib, name, "parameter", self.source(lib, p.get("locator")))
        return None

    def closure(self, roots: list[tuple[str, str]]) -> _Closure:
        """Every definition, value set and code the roots use, across included libraries (not FHIRHelpers)."""
        out = _Closure()
        queue: list[tuple[str, str]] = []

        def add(lib: str, name: str) -> None:
            if lib == FHIRHELPERS or lib not in self.elm or (lib, name) in out.definitions:
                return
            d = self.definition(lib, name)
            if d is not None:
                out.definitions[(lib, name)] = d
                queue.append((lib, name))

        def visit(lib: str, node: Any) -> None:
            if isinstance(node, list):
                for v in node:
                    visit(lib, v)
                return
            if not isinstance(node, dict):
                return
            t = node.get("type")
            if t in ("ExpressionRef", "FunctionRef", "ParameterRef") and isinstance(node.get("name"), str):
                add(self.target(lib, node), node["name"])
            elif t == "ValueSetRef" and isinstance(node.get("name"), str):
                target = self.target(lib, node)
                for vs in self.defs(target, "valueSets"):
                    if vs.get("name") == node["name"]:
                        out.value_sets[vs["id"]] = None
            elif t == "CodeRef" and isinstance(node.get("name"), str):
                target = self.target(lib, node)
                if target != FHIRHELPERS:
                    out.codes[(target, node["name"])] = None
            for k, v in node.items():
                if k != "annotation":
                    visit(lib, v)

        for lib, name in roots:
            add(lib, name)
        while queue:
            lib, name = queue.pop(0)
            for s in self.statements(lib, name):
                visit(lib, s.get("expression"))
            for p in self.defs(lib, "parameters"):
                if p.get("name") == name:
                    visit(lib, p.get("default"))
        return out

    def first_line(self, lib: str, name: str) -> int:
        """Where a definition starts in its library's CQL (0 if unknown)."""
        for section in ("statements", "parameters"):
            for d in self.defs(lib, section):
                if d.get("name") == name:
                    m = re.match(r"^(\d+):", str(d.get("locator", "")))
                    return int(m.group(1)) if m else 0
        return 0

    def code(self, lib: str, name: str) -> Coding | None:
        systems = {d["name"]: d["id"] for d in self.defs(lib, "codeSystems")}
        for d in self.defs(lib, "codes"):
            if d.get("name") == name:
                sysname = (d.get("codeSystem") or {}).get("name", "")
                return Coding(systems.get(sysname, sysname), str(d.get("id", "")), str(d.get("display", "")))
        return None

    # -------------------------------------------------------- plain language

    def _resolve_ref(self, lib: str, node: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        target = self.target(lib, node)
        stmts = self.statements(target, node["name"]) if target != FHIRHELPERS else []
        return target, (stmts[0] if stmts else None)

    def plain(self, lib: str, expr: dict[str, Any], depth: int = 0) -> Plain:
        t = expr.get("type")
        if t in ("And", "Or"):
            kids: list[Plain] = []
            for op in expr.get("operand", []):
                child = self.plain(lib, op, depth)
                kids.extend(child.children if child.op == ("all" if t == "And" else "any") else [child])
            return Plain("all" if t == "And" else "any", children=tuple(kids))
        if t == "Not" and isinstance(expr.get("operand"), dict):
            return Plain("not", children=(self.plain(lib, expr["operand"], depth),))
        if t == "ExpressionRef":
            target, stmt = self._resolve_ref(lib, expr)
            name = str(expr["name"])
            ref_anchor = anchor("def", target, name) if stmt is not None else ""
            inner_lib, inner = target, (stmt or {}).get("expression")
            # Follow pure aliases (define "X": Common."X") to the definition that has the logic.
            while isinstance(inner, dict) and inner.get("type") == "ExpressionRef":
                nxt_lib, nxt = self._resolve_ref(inner_lib, inner)
                if nxt is None:
                    break
                inner_lib, inner = nxt_lib, nxt.get("expression")
            kids_t: tuple[Plain, ...] = ()
            if isinstance(inner, dict) and inner.get("type") in ("And", "Or", "Not") and depth < PLAIN_DEPTH:
                kids_t = (self.plain(inner_lib, inner, depth + 1),)
            return Plain("ref", humanize(name), ref_anchor, kids_t)
        return Plain("cql", self.fragment(lib, expr.get("locator")) or str(t))

    def summary(self, lib: str, expr: dict[str, Any], nested: bool = False) -> str:
        """One line: local composite definitions inlined, definitions of other libraries by name."""
        t = expr.get("type")
        if t in ("And", "Or"):
            sep = " AND " if t == "And" else " OR "
            parts: list[str] = []
            for op in expr.get("operand", []):
                same = op.get("type") == t
                parts.append(self.summary(lib, op, nested=not same) if not same else self.summary(lib, op))
            text = sep.join(parts)
            return f"({text})" if nested else text
        if t == "Not" and isinstance(expr.get("operand"), dict):
            return "NOT " + self.summary(lib, expr["operand"], nested=True)
        if t == "ExpressionRef":
            if not expr.get("libraryName"):
                stmts = self.statements(lib, expr["name"])
                inner = stmts[0].get("expression") if stmts else None
                if isinstance(inner, dict) and inner.get("type") in ("And", "Or", "Not", "ExpressionRef"):
                    return self.summary(lib, inner, nested)
            return humanize(str(expr["name"]))
        return self.fragment(lib, expr.get("locator")) or str(t)

    def condition(self, lib: str, name: str) -> Condition | None:
        d = self.definition(lib, name)
        stmts = self.statements(lib, name)
        if d is None or not stmts or not isinstance(stmts[0].get("expression"), dict):
            return None
        expr = stmts[0]["expression"]
        top = self.plain(lib, {"type": "ExpressionRef", "name": name})
        plain = top.children[0] if top.children else top
        return Condition(d, plain, self.summary(lib, expr))


# ---------------------------------------------------------------- building the model


def _error(resource: dict[str, Any], location: str, message: str) -> ContentError:
    key = f"{resource.get('resourceType')}/{resource.get('id')}"
    return ContentError(f"{key}: {message}", [Finding("error", key, location, message, "render")])


def _coding_models(concept: Any) -> tuple[Coding, ...]:
    """A CodeableConcept's codings as the pages show them (see core.fhir.coding_entries)."""
    return tuple(Coding(str(c["system"]), str(c["code"]), str(c.get("display", ""))) for c in coding_entries(concept))


def _rating(action: dict[str, Any], url: str) -> Rating | None:
    for ext in action.get("extension", []):
        if ext.get("url") == url:
            concept = ext.get("valueCodeableConcept") or {}
            codes = _coding_models(concept)
            if codes:
                c = codes[0]
                return Rating(c.code, c.display, str(concept.get("text", "")), c.system, url)
    return None


def _quotes(node: dict[str, Any], key: str = "documentation") -> tuple[Quote, ...]:
    return tuple(
        Quote(str(d["citation"]), str(d.get("display", "")))
        for d in node.get(key, [])
        if isinstance(d, dict) and isinstance(d.get("citation"), str) and d.get("type") in (None, "citation")
    )


def _library_name(pkg: Package, plan: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    canonical = primary_library(plan)
    lib = pkg.resolve(canonical) if canonical is not None else None
    if lib is None or not isinstance(lib.get("name"), str) or lib["name"] not in pkg.elm:
        raise _error(plan, "library", "needs exactly one primary library in the package, compiled from cql/")
    return str(lib["name"]), lib


def _conditions(logic: _Logic, lib: str, plan: dict[str, Any], action: dict[str, Any], path: str) -> list[Condition]:
    out: list[Condition] = []
    for i, c in enumerate(action.get("condition", [])):
        if c.get("kind") != "applicability":
            continue
        expr = c.get("expression") or {}
        if expr.get("language") not in CQL_IDENTIFIER_LANGUAGES or not isinstance(expr.get("expression"), str):
            raise _error(plan, f"{path}.condition[{i}].expression", "only text/cql-identifier conditions are rendered")
        cond = logic.condition(lib, expr["expression"])
        if cond is None:
            raise _error(plan, f"{path}.condition[{i}]", f"no define {expr['expression']!r} in library {lib}")
        out.append(cond)
    return out


def _activity(pkg: Package, logic: _Logic, lib: str, step: ActionStep) -> Activity | None:
    """What an action of a recommendation proposes, shown as if it applied (None without a definition).

    A top-level action's conditions are the recommendation's own; a sub-action's condition is
    shown on its activity ("only when").
    """
    plan, action, path = step.plan, step.action, step.path
    ref = action.get("definitionCanonical")
    if not isinstance(ref, str):
        return None
    ad = pkg.resolve(ref)
    if ad is None or ad.get("resourceType") != "ActivityDefinition":
        raise _error(plan, f"{path}.definitionCanonical", f"{ref} is not an ActivityDefinition in the package")
    proposal = evaluation.Activity.of_definition(ad)
    codes = tuple(Coding(code.partition("|")[0], code.partition("|")[2], _display(ad, code)) for code in proposal.codes)
    codings = tuple(("code", c) for c in _coding_models(ad.get("code"))) + tuple(
        ("product", c) for c in _coding_models(ad.get("productCodeableConcept"))
    )
    if proposal.resource_type == "CommunicationRequest":
        text = str((ad.get("code") or {}).get("text", ""))
    else:
        text = " ".join(str(d.get("text", "")) for d in ad.get("dosage", []) if isinstance(d, dict)).strip()
    conds = [] if step.top else _conditions(logic, lib, plan, action, path)
    return Activity(
        proposal=proposal,
        title=str(ad.get("title") or ad.get("name") or ad["id"]),
        action_title=str(action.get("title", "")),
        action_description=str(action.get("description", "")),
        description=str(ad.get("description", "")),
        codes=codes,
        codings=codings,
        text=text,
        intent=str(ad.get("intent", "")),
        priority=str(ad.get("priority", "")),
        condition=conds[0] if conds else None,
        json_href=json_href(ad),
    )


def _display(ad: dict[str, Any], code: str) -> str:
    for concept in (ad.get("productCodeableConcept"), ad.get("code")):
        for c in _coding_models(concept):
            if f"{c.system}|{c.code}" == code:
                return c.display
    return ""


def _value_set(pkg: Package, url: str) -> ValueSet | None:
    vs = pkg.resolve(url)
    if vs is None or vs.get("resourceType") != "ValueSet":
        return None
    expansion = tuple(
        Coding(str(c["system"]), str(c["code"]), str(c.get("display", "")))
        for c in (vs.get("expansion") or {}).get("contains", [])
        if isinstance(c, dict) and "system" in c and "code" in c
    )
    return ValueSet(
        str(vs["id"]),
        str(vs["url"]),
        str(vs.get("title") or vs.get("name") or vs["id"]),
        str(vs.get("description", "")),
        expansion,
        json_href(vs),
    )


@dataclass
class _Actions:
    """What a recommendation's actions hold, gathered in one walk: conditions, activities, quotes, ..."""

    conditions: list[Condition] = field(default_factory=list)
    activities: list[Activity] = field(default_factory=list)
    quotes: list[Quote] = field(default_factory=list)
    triggers: list[str] = field(default_factory=list)
    dynamic: list[DynamicText] = field(default_factory=list)


def _actions(pkg: Package, logic: _Logic, lib: str, plan: dict[str, Any]) -> _Actions:
    """Every action of the plan as if it applied: the top-level ones' conditions, quotes, triggers
    and dynamic text, and every action's activity (sub-actions included), in document order."""
    out = _Actions()
    for step in iter_actions(plan):
        action = step.action
        if step.top:
            out.conditions.extend(_conditions(logic, lib, plan, action, step.path))
        activity = _activity(pkg, logic, lib, step)
        if activity is not None:
            out.activities.append(activity)
        if not step.top:
            continue
        out.quotes.extend(_quotes(action))
        out.triggers.extend(str(t.get("name")) for t in action.get("trigger", []) if t.get("name"))
        for dv in action.get("dynamicValue", []):
            expr = dv.get("expression") or {}
            d = logic.definition(lib, str(expr.get("expression")))
            if expr.get("language") in CQL_IDENTIFIER_LANGUAGES and d is not None:
                out.dynamic.append(DynamicText(str(dv.get("path", "")), d))
    return out


@dataclass
class _Uses:
    """What a recommendation's logic uses: CQL definitions (source order), value sets and codes."""

    definitions: list[Definition]
    value_sets: list[ValueSet]
    codes: list[CodeUse]


def _uses(pkg: Package, logic: _Logic, lib: str, actions: _Actions) -> _Uses:
    roots = [(c.definition.library, c.definition.name) for c in actions.conditions]
    roots += [(a.condition.definition.library, a.condition.definition.name) for a in actions.activities if a.condition]
    roots += [(d.definition.library, d.definition.name) for d in actions.dynamic]
    closure = logic.closure(roots)
    # Definitions in source order within each library, the recommendation's own library first.
    definitions = sorted(
        closure.definitions.values(), key=lambda d: (d.library != lib, d.library, logic.first_line(d.library, d.name))
    )
    value_sets = [v for v in (_value_set(pkg, url) for url in closure.value_sets) if v is not None]
    codes = [CodeUse(lib_, name, c) for (lib_, name) in closure.codes if (c := logic.code(lib_, name)) is not None]
    return _Uses(
        definitions,
        sorted(value_sets, key=lambda v: v.id),
        sorted(codes, key=lambda c: (c.library, c.name)),
    )


def _json_links(
    pkg: Package, plan: dict[str, Any], lib: str, lib_res: dict[str, Any], activities: Iterable[Activity], uses: _Uses
) -> tuple[tuple[str, str], ...]:
    """(label, href) of every resource behind a recommendation: plan, libraries, definitions, value sets."""
    links: list[tuple[str, str]] = [(f"PlanDefinition/{plan['id']}", json_href(plan))]
    links.append((f"Library/{lib_res['id']}", json_href(lib_res)))
    for inc in sorted({d.library for d in uses.definitions} - {lib}):
        res = next((r for r in pkg.resources if r["resourceType"] == "Library" and r.get("name") == inc), None)
        if res is not None:
            links.append((f"Library/{res['id']}", json_href(res)))
    for a in activities:
        key = f"ActivityDefinition/{a.definition_id}"
        if all(k != key for k, _ in links):
            links.append((key, a.json_href))
    links.extend((f"ValueSet/{v.id}", v.json_href) for v in uses.value_sets)
    return tuple(links)


def _recommendation(pkg: Package, logic: _Logic, plan: dict[str, Any], short_title: str) -> Recommendation:
    lib, lib_res = _library_name(pkg, plan)
    first = next((a for a in plan.get("action", []) if isinstance(a, dict)), None)
    if first is None:
        raise _error(plan, "action", "a recommendation needs at least one action")
    actions = _actions(pkg, logic, lib, plan)
    uses = _uses(pkg, logic, lib, actions)
    card = evaluation.Recommendation.from_action(plan, first)
    card.activities.extend(a.proposal for a in actions.activities)
    return Recommendation(
        card=card,
        short_title=short_title or str(plan.get("title", plan["id"])),
        title=str(plan.get("title") or plan["id"]),
        description=str(plan.get("description", "")),
        usage=str(plan.get("usage", "")),
        quotes=tuple(actions.quotes),
        strength=_rating(first, STRENGTH_EXT),
        quality=_rating(first, QUALITY_EXT),
        triggers=tuple(dict.fromkeys(actions.triggers)),
        conditions=tuple(actions.conditions),
        activities=tuple(actions.activities),
        dynamic=tuple(actions.dynamic),
        definitions=tuple(uses.definitions),
        value_sets=tuple(uses.value_sets),
        codes=tuple(uses.codes),
        json_links=_json_links(pkg, plan, lib, lib_res, actions.activities, uses),
        safety_rules=safety_rules(plan),
    )


def _recommendation_refs(pkg: Package, pathway: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """(recommendation PlanDefinition, the pathway action's title) in pathway order, nested pathways followed.

    A recommendation reached twice is listed once; a pathway that reaches itself is a ContentError.
    """

    def nested_pathway(ref: str) -> dict[str, Any] | None:
        target = pkg.resolve(ref)
        return target if target is not None and is_pathway(target) else None

    out: list[tuple[dict[str, Any], str]] = []
    for step in iter_actions(pathway, nested_pathway):
        ref = step.action.get("definitionCanonical")
        if not isinstance(ref, str):
            continue
        target = pkg.resolve(ref)
        if target is None:
            raise _error(step.plan, f"{step.path}.definitionCanonical", f"{ref} is not in the package")
        if target.get("resourceType") == "PlanDefinition" and not is_pathway(target):
            if all(t is not target for t, _ in out):
                out.append((target, str(step.action.get("title", ""))))
    return out


def load_cases(cases_dir: Path) -> list[dict[str, Any]]:
    """Each scenario's expected.json (with its folder name as 'id'), sorted by name; a bad file is BadInputError."""
    out: list[dict[str, Any]] = []
    if not cases_dir.is_dir():
        return out
    for d in sorted(p for p in cases_dir.iterdir() if (p / "expected.json").is_file()):
        path = d / "expected.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise BadInputError(f"{path}: cannot read the expected results: {e}") from None
        if not isinstance(data, dict) or not isinstance(data.get("recommendations"), dict):
            raise BadInputError(f"{path}: needs a 'recommendations' object (PlanDefinition id -> activity codes)")
        out.append({**data, "id": d.name, "_patient": d / "patient.json"})
    return out


def _case_model(c: dict[str, Any]) -> Case:
    defines = tuple(
        (str(lib), str(name), json.dumps(value))
        for lib, values in sorted((c.get("defines") or {}).items())
        for name, value in values.items()
    )
    return Case(
        id=str(c["id"]),
        description=str(c.get("description", "")),
        at=str(c.get("at", "")),
        expected=tuple((str(k), tuple(str(x) for x in v)) for k, v in c["recommendations"].items()),
        defines=defines,
        patient_href=f"json/case-{c['id']}.json" if Path(c["_patient"]).is_file() else "",
    )


def _with_cases(recs: list[Recommendation], cases: list[Case]) -> list[Recommendation]:
    """Each recommendation with the cases where it fires and those where it does not."""
    fires: dict[str, list[str]] = {r.id: [] for r in recs}
    for c in cases:
        for rid, _ in c.expected:
            fires.setdefault(rid, []).append(c.id)
    return [
        replace(r, fires_in=tuple(fires[r.id]), silent_in=tuple(c.id for c in cases if c.id not in fires[r.id]))
        for r in recs
    ]


def _trace(
    pathway: dict[str, Any],
    population: list[Condition],
    quotes: list[Quote],
    recs: list[Recommendation],
    cases: list[Case],
) -> tuple[TraceRow, ...]:
    """The traceability rows: the pathway's passages (the population), then each recommendation's."""
    gl_cases = tuple(c.id for c in cases if c.expected)
    trace: list[TraceRow] = [
        TraceRow(
            q,
            f"PlanDefinition/{pathway['id']}",
            "index.html",
            tuple(pc.definition.qualified for pc in population),
            gl_cases,
            "cases where any recommendation fires (the population)",
        )
        for q in quotes
    ]
    for r in recs:
        encoded = (
            *(c.definition.qualified for c in r.conditions),
            *(f"ActivityDefinition/{a.definition_id}" for a in r.activities),
        )
        trace.extend(
            TraceRow(q, f"PlanDefinition/{r.id}", r.page, encoded, r.fires_in, "cases where it fires") for q in r.quotes
        )
    return tuple(trace)


def _resource_links(pkg: Package) -> tuple[ResourceLink, ...]:
    return tuple(
        ResourceLink(
            str(res["resourceType"]),
            str(res["id"]),
            str(res.get("title") or res.get("name") or res["id"]),
            str(res.get("version", "")),
            json_href(res),
        )
        for res in pkg.resources
    )


def _population(logic: _Logic, pkg: Package, pathway: dict[str, Any]) -> tuple[list[Condition], list[Quote]]:
    """The pathway's own actions' conditions (its population) and quotes; ContentError without a condition."""
    plib, _ = _library_name(pkg, pathway)
    conditions: list[Condition] = []
    quotes: list[Quote] = []
    for step in iter_actions(pathway):
        if step.top:
            conditions.extend(_conditions(logic, plib, pathway, step.action, step.path))
            quotes.extend(_quotes(step.action))
    if not conditions:
        raise _error(pathway, "action[0].condition", "the pathway needs an applicability condition (its population)")
    return conditions, quotes


def site_model(pkg: Package, cases: list[dict[str, Any]]) -> Site:
    """Everything the pages show, derived from the built package and the test cases' expectations.

    A pathway that reaches itself through its actions is a ContentError located at the
    definitionCanonical that closes the loop.
    """
    logic = _Logic(pkg)
    cfg = pkg.config.package
    found = pathways(pkg)
    pathway = next((p for p in found if p.get("id") == cfg.pathway), found[0])
    population, pathway_quotes = _population(logic, pkg, pathway)
    recs = [_recommendation(pkg, logic, plan, title) for plan, title in _recommendation_refs(pkg, pathway)]
    case_models = [_case_model(c) for c in cases]
    recs = _with_cases(recs, case_models)
    pop_defs = logic.closure([(c.definition.library, c.definition.name) for c in population])
    return Site(
        title=cfg.title,
        name=cfg.name,
        package_id=cfg.id,
        version=cfg.version,
        status=cfg.status,
        experimental=cfg.experimental,
        date=cfg.date,
        publisher=cfg.publisher,
        canonical=cfg.canonical,
        license=cfg.license,
        fhir_version=pkg.config.fhir_version,
        citations=_quotes(pathway, "relatedArtifact"),
        pathway_id=str(pathway["id"]),
        pathway_title=str(pathway.get("title") or pathway["id"]),
        pathway_description=str(pathway.get("description", "")),
        pathway_usage=str(pathway.get("usage", "")),
        pathway_quotes=tuple(pathway_quotes),
        population=population[0],
        triggers=tuple(dict.fromkeys(t for r in recs for t in r.triggers)),
        recommendations=tuple(recs),
        cases=tuple(case_models),
        trace=_trace(pathway, population, pathway_quotes, recs, case_models),
        resources=_resource_links(pkg),
        definitions=tuple(pop_defs.definitions.values()),
        safety_rules=safety_rules(pathway),
    )
