"""The page model of the rendered site: recommendations, conditions in plain language, CQL, value sets, cases."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from guideline.content.package import Package
from guideline.core.errors import BadInputError, ContentError, Finding
from guideline.evaluation.model import ORDER_TYPES, activity_codes
from guideline.evaluation.walk import CQL_IDENTIFIER, pathways

STRENGTH_EXT = "http://hl7.org/fhir/StructureDefinition/cqf-strengthOfRecommendation"
QUALITY_EXT = "http://hl7.org/fhir/StructureDefinition/cqf-qualityOfEvidence"
STRENGTH_SYSTEM = "http://terminology.hl7.org/CodeSystem/recommendation-strength"
QUALITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/evidence-quality"
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
    code: str
    display: str
    text: str
    system: str
    extension: str


@dataclass(frozen=True)
class Quote:
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
    definition: Definition
    plain: Plain
    summary: str  # one line, for the diagram


@dataclass(frozen=True)
class Activity:
    definition_id: str
    title: str
    kind: str  # the request resource type $apply creates
    order: bool
    action_title: str
    action_description: str
    description: str
    codes: tuple[Coding, ...]  # the codes the generated request carries (recommend.activity_codes)
    codings: tuple[tuple[str, Coding], ...]  # every coding on the definition: (element, coding)
    text: str  # message text (CommunicationRequest) or dosage text
    intent: str
    priority: str
    condition: Condition | None
    json_href: str

    @property
    def anchor(self) -> str:
        return anchor("act", self.definition_id)


@dataclass(frozen=True)
class ValueSet:
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
    library: str
    name: str
    coding: Coding


@dataclass(frozen=True)
class DynamicText:
    path: str
    definition: Definition


@dataclass(frozen=True)
class Recommendation:
    id: str
    short_title: str  # the pathway's action title
    title: str  # the PlanDefinition title
    card_title: str
    card_description: str
    description: str
    usage: str
    quotes: tuple[Quote, ...]
    strength: Rating | None
    quality: Rating | None
    triggers: tuple[str, ...]
    conditions: tuple[Condition, ...]
    activities: tuple[Activity, ...]
    dynamic: tuple[DynamicText, ...]
    definitions: tuple[Definition, ...]
    value_sets: tuple[ValueSet, ...]
    codes: tuple[CodeUse, ...]
    json_links: tuple[tuple[str, str], ...]  # (label, href)
    fires_in: tuple[str, ...] = ()
    silent_in: tuple[str, ...] = ()

    @property
    def informational(self) -> bool:
        return not any(a.order for a in self.activities)

    @property
    def page(self) -> str:
        return f"rec-{self.id}.html"


@dataclass(frozen=True)
class Case:
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
class TraceRow:
    quote: Quote
    artifact: str
    page: str
    encoded: tuple[str, ...]
    cases: tuple[str, ...]
    cases_note: str


@dataclass(frozen=True)
class ResourceLink:
    resource_type: str
    id: str
    title: str
    version: str
    href: str


@dataclass(frozen=True)
class Site:
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


def anchor(prefix: str, *parts: str) -> str:
    """A stable, URL-safe fragment id."""
    body = "-".join(re.sub(r"[^A-Za-z0-9_]+", "-", p).strip("-") for p in parts)
    return f"{prefix}-{body}"


def json_href(resource: dict[str, Any]) -> str:
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


def _codings(concept: Any) -> tuple[Coding, ...]:
    if not isinstance(concept, dict):
        return ()
    return tuple(
        Coding(str(c["system"]), str(c["code"]), str(c.get("display", "")))
        for c in concept.get("coding", [])
        if isinstance(c, dict) and isinstance(c.get("system"), str) and isinstance(c.get("code"), str)
    )


def _rating(action: dict[str, Any], url: str) -> Rating | None:
    for ext in action.get("extension", []):
        if ext.get("url") == url:
            concept = ext.get("valueCodeableConcept") or {}
            codes = _codings(concept)
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
    libs = plan.get("library") or []
    lib = pkg.resolve(libs[0]) if len(libs) == 1 and isinstance(libs[0], str) else None
    if lib is None or not isinstance(lib.get("name"), str) or lib["name"] not in pkg.elm:
        raise _error(plan, "library", "needs exactly one primary library in the package, compiled from cql/")
    return str(lib["name"]), lib


def _conditions(logic: _Logic, lib: str, plan: dict[str, Any], action: dict[str, Any], path: str) -> list[Condition]:
    out: list[Condition] = []
    for i, c in enumerate(action.get("condition", [])):
        if c.get("kind") != "applicability":
            continue
        expr = c.get("expression") or {}
        if expr.get("language") not in CQL_IDENTIFIER or not isinstance(expr.get("expression"), str):
            raise _error(plan, f"{path}.condition[{i}].expression", "only text/cql-identifier conditions are rendered")
        cond = logic.condition(lib, expr["expression"])
        if cond is None:
            raise _error(plan, f"{path}.condition[{i}]", f"no define {expr['expression']!r} in library {lib}")
        out.append(cond)
    return out


def _activity(
    pkg: Package, logic: _Logic, lib: str, plan: dict[str, Any], action: dict[str, Any], path: str
) -> Activity | None:
    ref = action.get("definitionCanonical")
    if not isinstance(ref, str):
        return None
    ad = pkg.resolve(ref)
    if ad is None or ad.get("resourceType") != "ActivityDefinition":
        raise _error(plan, f"{path}.definitionCanonical", f"{ref} is not an ActivityDefinition in the package")
    kind = str(ad.get("kind", ""))
    codes = tuple(
        Coding(code.partition("|")[0], code.partition("|")[2], _display(ad, code))
        for code in sorted(activity_codes(ad))
    )
    codings = tuple(("code", c) for c in _codings(ad.get("code"))) + tuple(
        ("product", c) for c in _codings(ad.get("productCodeableConcept"))
    )
    if kind == "CommunicationRequest":
        text = str((ad.get("code") or {}).get("text", ""))
    else:
        text = " ".join(str(d.get("text", "")) for d in ad.get("dosage", []) if isinstance(d, dict)).strip()
    conds = _conditions(logic, lib, plan, action, path)
    return Activity(
        definition_id=str(ad["id"]),
        title=str(ad.get("title") or ad.get("name") or ad["id"]),
        kind=kind,
        order=kind in ORDER_TYPES,
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
        for c in _codings(concept):
            if f"{c.system}|{c.code}" == code:
                return c.display
    return ""


def _activities(
    pkg: Package, logic: _Logic, lib: str, plan: dict[str, Any], action: dict[str, Any], path: str, top: bool
) -> list[Activity]:
    """The action's activity and its sub-actions', in order (what $apply would create if all applied)."""
    out: list[Activity] = []
    act = _activity(pkg, logic, lib, plan, {**action, "condition": [] if top else action.get("condition", [])}, path)
    if act is not None:
        out.append(act)
    for i, sub in enumerate(action.get("action", [])):
        out.extend(_activities(pkg, logic, lib, plan, sub, f"{path}.action[{i}]", False))
    return out


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


def _recommendation(pkg: Package, logic: _Logic, plan: dict[str, Any], short_title: str) -> Recommendation:
    lib, lib_res = _library_name(pkg, plan)
    actions = [a for a in plan.get("action", []) if isinstance(a, dict)]
    if not actions:
        raise _error(plan, "action", "a recommendation needs at least one action")
    conditions: list[Condition] = []
    activities: list[Activity] = []
    quotes: list[Quote] = []
    triggers: list[str] = []
    dynamic: list[DynamicText] = []
    for i, action in enumerate(actions):
        conditions.extend(_conditions(logic, lib, plan, action, f"action[{i}]"))
        activities.extend(_activities(pkg, logic, lib, plan, action, f"action[{i}]", True))
        quotes.extend(_quotes(action))
        triggers.extend(str(t.get("name")) for t in action.get("trigger", []) if t.get("name"))
        for dv in action.get("dynamicValue", []):
            expr = dv.get("expression") or {}
            d = logic.definition(lib, str(expr.get("expression")))
            if expr.get("language") in CQL_IDENTIFIER and d is not None:
                dynamic.append(DynamicText(str(dv.get("path", "")), d))
    first = actions[0]
    roots = [(c.definition.library, c.definition.name) for c in conditions]
    roots += [(a.condition.definition.library, a.condition.definition.name) for a in activities if a.condition]
    roots += [(d.definition.library, d.definition.name) for d in dynamic]
    closure = logic.closure(roots)
    # Definitions in source order within each library, the recommendation's own library first.
    definitions = sorted(
        closure.definitions.values(), key=lambda d: (d.library != lib, d.library, logic.first_line(d.library, d.name))
    )
    value_sets = [v for v in (_value_set(pkg, url) for url in closure.value_sets) if v is not None]
    codes = [CodeUse(lib_, name, c) for (lib_, name) in closure.codes if (c := logic.code(lib_, name)) is not None]
    links: list[tuple[str, str]] = [(f"PlanDefinition/{plan['id']}", json_href(plan))]
    links.append((f"Library/{lib_res['id']}", json_href(lib_res)))
    for inc in sorted({d.library for d in definitions} - {lib}):
        res = next((r for r in pkg.resources if r["resourceType"] == "Library" and r.get("name") == inc), None)
        if res is not None:
            links.append((f"Library/{res['id']}", json_href(res)))
    for a in activities:
        key = f"ActivityDefinition/{a.definition_id}"
        if all(k != key for k, _ in links):
            links.append((key, a.json_href))
    links.extend((f"ValueSet/{v.id}", v.json_href) for v in sorted(value_sets, key=lambda v: v.id))
    return Recommendation(
        id=str(plan["id"]),
        short_title=short_title or str(plan.get("title", plan["id"])),
        title=str(plan.get("title") or plan["id"]),
        card_title=str(first.get("title", "")),
        card_description=str(first.get("description", "")),
        description=str(plan.get("description", "")),
        usage=str(plan.get("usage", "")),
        quotes=tuple(quotes),
        strength=_rating(first, STRENGTH_EXT),
        quality=_rating(first, QUALITY_EXT),
        triggers=tuple(dict.fromkeys(triggers)),
        conditions=tuple(conditions),
        activities=tuple(activities),
        dynamic=tuple(dynamic),
        definitions=tuple(definitions),
        value_sets=tuple(sorted(value_sets, key=lambda v: v.id)),
        codes=tuple(sorted(codes, key=lambda c: (c.library, c.name))),
        json_links=tuple(links),
    )


def _recommendation_refs(pkg: Package, pathway: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """(recommendation PlanDefinition, the pathway action's title) in pathway order, nested pathways followed."""
    out: list[tuple[dict[str, Any], str]] = []

    def walk(actions: list[dict[str, Any]]) -> None:
        for a in actions:
            ref = a.get("definitionCanonical")
            target = pkg.resolve(ref) if isinstance(ref, str) else None
            if isinstance(ref, str) and target is None:
                raise _error(pathway, "action.definitionCanonical", f"{ref} is not in the package")
            if target is not None and target.get("resourceType") == "PlanDefinition":
                if target in pathways(pkg):
                    walk(target.get("action", []))
                elif all(t is not target for t, _ in out):
                    out.append((target, str(a.get("title", ""))))
            walk(a.get("action", []))

    walk(pathway.get("action", []))
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


def site_model(pkg: Package, cases: list[dict[str, Any]]) -> Site:
    """Everything the pages show, derived from the built package and the test cases' expectations."""
    logic = _Logic(pkg)
    cfg = pkg.config.package
    found = pathways(pkg)
    pathway = next((p for p in found if p.get("id") == cfg.pathway), found[0])
    plib, _ = _library_name(pkg, pathway)
    pop_conditions: list[Condition] = []
    pathway_quotes: list[Quote] = []
    for i, action in enumerate(pathway.get("action", [])):
        pop_conditions.extend(_conditions(logic, plib, pathway, action, f"action[{i}]"))
        pathway_quotes.extend(_quotes(action))
    if not pop_conditions:
        raise _error(pathway, "action[0].condition", "the pathway needs an applicability condition (its population)")
    recs = [_recommendation(pkg, logic, plan, title) for plan, title in _recommendation_refs(pkg, pathway)]

    case_models: list[Case] = []
    fires: dict[str, list[str]] = {r.id: [] for r in recs}
    for c in cases:
        expected = c["recommendations"]
        for rid in expected:
            fires.setdefault(str(rid), []).append(str(c["id"]))
        defines = tuple(
            (str(lib), str(name), json.dumps(value))
            for lib, values in sorted((c.get("defines") or {}).items())
            for name, value in values.items()
        )
        case_models.append(
            Case(
                id=str(c["id"]),
                description=str(c.get("description", "")),
                at=str(c.get("at", "")),
                expected=tuple((str(k), tuple(str(x) for x in v)) for k, v in expected.items()),
                defines=defines,
                patient_href=f"json/case-{c['id']}.json" if Path(c["_patient"]).is_file() else "",
            )
        )
    all_ids = tuple(c.id for c in case_models)
    recs = [
        _with_cases(r, tuple(fires.get(r.id, [])), tuple(i for i in all_ids if i not in fires.get(r.id, [])))
        for r in recs
    ]
    gl_cases = tuple(c.id for c in case_models if c.expected)

    trace: list[TraceRow] = [
        TraceRow(
            q,
            f"PlanDefinition/{pathway['id']}",
            "index.html",
            tuple(pc.definition.qualified for pc in pop_conditions),
            gl_cases,
            "cases where any recommendation fires (the population)",
        )
        for q in pathway_quotes
    ]
    for r in recs:
        encoded = (
            *(c.definition.qualified for c in r.conditions),
            *(f"ActivityDefinition/{a.definition_id}" for a in r.activities),
        )
        trace.extend(
            TraceRow(q, f"PlanDefinition/{r.id}", r.page, encoded, r.fires_in, "cases where it fires") for q in r.quotes
        )

    resources = tuple(
        ResourceLink(
            str(res["resourceType"]),
            str(res["id"]),
            str(res.get("title") or res.get("name") or res["id"]),
            str(res.get("version", "")),
            json_href(res),
        )
        for res in pkg.resources
    )
    pop_defs = logic.closure([(c.definition.library, c.definition.name) for c in pop_conditions])
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
        population=pop_conditions[0],
        triggers=tuple(dict.fromkeys(t for r in recs for t in r.triggers)),
        recommendations=tuple(recs),
        cases=tuple(case_models),
        trace=tuple(trace),
        resources=resources,
        definitions=tuple(pop_defs.definitions.values()),
    )


def _with_cases(r: Recommendation, fires: tuple[str, ...], silent: tuple[str, ...]) -> Recommendation:
    return replace(r, fires_in=fires, silent_in=silent)
