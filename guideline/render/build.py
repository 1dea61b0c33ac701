"""Builds the site's page model from the built package and the test cases' expectations."""

from __future__ import annotations

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
    iter_actions,
    primary_library,
    walk_pathway,
)
from guideline.evaluation import model as evaluation
from guideline.evaluation.walk import pathways
from guideline.render.indicators import counted_population
from guideline.render.logic import Logic
from guideline.render.model import (
    Activity,
    Case,
    CodeUse,
    Coding,
    Condition,
    Criterion,
    Definition,
    DynamicText,
    Indicator,
    Quote,
    Rating,
    Recommendation,
    ResourceLink,
    SafetyRule,
    Site,
    TraceRow,
    ValueSet,
    json_href,
)

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


def _conditions(logic: Logic, lib: str, plan: dict[str, Any], action: dict[str, Any], path: str) -> list[Condition]:
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


def _activity(pkg: Package, logic: Logic, lib: str, step: ActionStep) -> Activity | None:
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


def _actions(pkg: Package, logic: Logic, lib: str, plan: dict[str, Any]) -> _Actions:
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


def _uses(pkg: Package, logic: Logic, lib: str, actions: _Actions) -> _Uses:
    roots = [(c.definition.library, c.definition.name) for c in actions.conditions]
    roots += [(a.condition.definition.library, a.condition.definition.name) for a in actions.activities if a.condition]
    roots += [(d.definition.library, d.definition.name) for d in actions.dynamic]
    closure = logic.closure(roots)
    # Definitions in source order within each library, the recommendation's own library first.
    definitions = sorted(
        closure.definitions, key=lambda d: (d.library != lib, d.library, logic.first_line(d.library, d.name))
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


def _recommendation(pkg: Package, logic: Logic, plan: dict[str, Any], short_title: str) -> Recommendation:
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
    out: list[tuple[dict[str, Any], str]] = []
    for reached in walk_pathway(pathway, pkg.resolve, missing=_not_in_package):
        plan = reached.recommendation
        if plan is not None and all(t is not plan for t, _ in out):
            out.append((plan, str(reached.step.action.get("title", ""))))
    return out


def _not_in_package(step: ActionStep, ref: str) -> ContentError:
    return _error(step.plan, f"{step.path}.definitionCanonical", f"{ref} is not in the package")


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


def _population(logic: Logic, pkg: Package, pathway: dict[str, Any]) -> tuple[list[Condition], list[Quote]]:
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


def _criterion(
    logic: Logic, lib: str, measure: dict[str, Any], node: dict[str, Any], path: str, kind: str, code: str
) -> Criterion:
    """A population or stratifier of a Measure with the define its criteria name; ContentError if not CQL."""
    expr = node.get("criteria") or {}
    if expr.get("language") not in CQL_IDENTIFIER_LANGUAGES or not isinstance(expr.get("expression"), str):
        raise _error(measure, f"{path}.criteria", "only text/cql-identifier criteria are rendered")
    d = logic.definition(lib, str(expr["expression"]))
    if d is None:
        raise _error(measure, f"{path}.criteria", f"no define {expr['expression']!r} in library {lib}")
    return Criterion(kind, code, str(node.get("description", "")), d)


def _stratifier(logic: Logic, lib: str, measure: dict[str, Any], strat: dict[str, Any], path: str) -> list[Criterion]:
    """A stratifier's criteria: its own, or (as CR 4.4 needs for value strata) those of its components."""
    name = _code(strat.get("code"), path)
    if strat.get("criteria") or not strat.get("component"):
        return [_criterion(logic, lib, measure, strat, path, "stratifier", name)]
    return [
        _criterion(logic, lib, measure, comp, f"{path}.component[{j}]", "stratifier", _code(comp.get("code"), name))
        for j, comp in enumerate(strat["component"])
    ]


def _code(concept: Any, fallback: str) -> str:
    """A population's or stratifier's name: the concept's text, else its first code, else `fallback`."""
    if isinstance(concept, dict):
        if concept.get("text"):
            return str(concept["text"])
        for c in concept.get("coding") or []:
            if isinstance(c, dict) and c.get("code"):
                return str(c["code"])
    return fallback


def _measured(
    pkg: Package, measure: dict[str, Any], pages: dict[str, tuple[str, str]]
) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """The recommendations (label, page) a Measure's relatedArtifacts point to, and every other target as text."""
    found: list[tuple[str, str]] = []
    other: list[str] = []
    for ra in measure.get("relatedArtifact") or []:
        ref = ra.get("resource") if isinstance(ra, dict) else None
        if not isinstance(ref, str):
            continue
        target = pkg.resolve(ref)
        key = str(target.get("id")) if target is not None and target.get("resourceType") == "PlanDefinition" else ""
        if key in pages:
            if pages[key] not in found:
                found.append(pages[key])
        else:
            other.append(f"{ra.get('type', 'related')}: {ra.get('display') or ref}")
    return tuple(found), tuple(other)


def _indicator(pkg: Package, logic: Logic, measure: dict[str, Any], pages: dict[str, tuple[str, str]]) -> Indicator:
    """A Measure's page model: populations and stratifiers with their defines, the CQL they reach, what it measures."""
    refs = [r for r in measure.get("library") or [] if isinstance(r, str)]
    lib_res = pkg.resolve(refs[0]) if len(refs) == 1 else None
    lib = lib_res.get("name") if lib_res is not None else None
    if lib_res is None or not isinstance(lib, str) or lib not in pkg.elm:
        raise _error(measure, "library", "needs exactly one library in the package, compiled from CQL")
    pops: list[Criterion] = []
    strats: list[Criterion] = []
    for g, group in enumerate(measure.get("group") or []):
        for i, pop in enumerate(group.get("population") or []):
            path = f"group[{g}].population[{i}]"
            pops.append(_criterion(logic, lib, measure, pop, path, "population", _code(pop.get("code"), path)))
        for i, strat in enumerate(group.get("stratifier") or []):
            strats.extend(_stratifier(logic, lib, measure, strat, f"group[{g}].stratifier[{i}]"))
    if not pops:
        raise _error(measure, "group[0].population", "a Measure needs at least one population")
    roots = [(c.definition.library, c.definition.name) for c in (*pops, *strats)]
    closure = logic.closure(roots)
    definitions = sorted(
        closure.definitions, key=lambda d: (d.library != lib, d.library, logic.first_line(d.library, d.name))
    )
    links: list[tuple[str, str]] = [(f"Measure/{measure['id']}", json_href(measure))]
    links.append((f"Library/{lib_res['id']}", json_href(lib_res)))
    for inc in sorted({d.library for d in definitions} - {lib}):
        res = next((r for r in pkg.resources if r["resourceType"] == "Library" and r.get("name") == inc), None)
        if res is not None:
            links.append((f"Library/{res['id']}", json_href(res)))
    measures, other = _measured(pkg, measure, pages)
    codes = [c for c in (measure.get("scoring") or {}).get("coding") or [] if isinstance(c, dict) and c.get("code")]
    scoring = str(codes[0]["code"]) if codes else _code(measure.get("scoring"), "")
    return Indicator(
        id=str(measure["id"]),
        url=str(measure.get("url", "")),
        name=str(measure.get("name") or measure["id"]),
        title=str(measure.get("title") or measure.get("name") or measure["id"]),
        description=str(measure.get("description", "")),
        usage=str(measure.get("usage", "")),
        scoring=scoring,
        counted=counted_population(measure),
        library=lib,
        populations=tuple(pops),
        stratifiers=tuple(strats),
        group_descriptions=tuple(
            str(g["description"]) for g in measure.get("group") or [] if isinstance(g, dict) and g.get("description")
        ),
        measures=measures,
        other_artifacts=other,
        definitions=tuple(definitions),
        safety_rules=safety_rules(measure),
        json_links=tuple(links),
    )


def _indicators(pkg: Package, logic: Logic, pathway: dict[str, Any], recs: list[Recommendation]) -> list[Indicator]:
    """Every Measure of the package as an indicator page, by id (none when the package has no Measure)."""
    pages = {r.id: (f"{r.short_title}: {r.title}", r.page) for r in recs}
    pages[str(pathway["id"])] = (str(pathway.get("title") or pathway["id"]), "index.html")
    measures = sorted((r for r in pkg.resources if r.get("resourceType") == "Measure"), key=lambda r: str(r["id"]))
    return [_indicator(pkg, logic, m, pages) for m in measures]


def site_model(pkg: Package, cases: list[dict[str, Any]]) -> Site:
    """Everything the pages show, derived from the built package and the test cases' expectations.

    A pathway that reaches itself through its actions is a ContentError located at the
    definitionCanonical that closes the loop.
    """
    logic = Logic(pkg)
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
        definitions=pop_defs.definitions,
        safety_rules=safety_rules(pathway),
        indicators=tuple(_indicators(pkg, logic, pathway, recs)),
    )
