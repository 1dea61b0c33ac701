"""The pathway walk: which recommendations fire, given each library's define values for one patient."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from guideline.content.package import Package
from guideline.core.errors import ContentError, Finding
from guideline.evaluation.model import Activity, Recommendation, activity_codes

PLAN_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/plan-definition-type"

# HAPI (clinical-reasoning) also accepts the older opioid spelling with a dot.
CQL_IDENTIFIER = frozenset({"text/cql-identifier", "text/cql.identifier"})


def _content_error(resource: dict[str, Any], location: str, message: str) -> ContentError:
    key = f"{resource.get('resourceType')}/{resource.get('id')}"
    return ContentError(f"{key}: {message}", [Finding("error", key, location, message, "recommend")])


# Library name -> that library's define values for the one patient being walked.
LibraryResults = Callable[[str], dict[str, Any]]


class _Evaluator:
    """Walks the pathway for one patient, asking `fetch` for each library's results once."""

    def __init__(self, pkg: Package, fetch: LibraryResults) -> None:
        self.pkg = pkg
        self.fetch = fetch
        self.results: dict[str, dict[str, Any]] = {}

    def library_results(self, plan: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        libs = plan.get("library") or []
        if len(libs) != 1 or not isinstance(libs[0], str):
            raise _content_error(plan, "library", "needs exactly one primary library to evaluate its conditions")
        lib = self.pkg.resolve(libs[0])
        if lib is None:
            raise _content_error(plan, "library[0]", f"library {libs[0]} is not in the package")
        name = lib.get("name")
        if not isinstance(name, str) or name not in self.pkg.elm:
            raise _content_error(lib, "name", f"no compiled CQL library named {name!r} (name must equal the CQL name)")
        if name not in self.results:
            self.results[name] = self.fetch(name)
        return name, self.results[name]

    def conditions_met(self, plan: dict[str, Any], action: dict[str, Any], path: str) -> bool:
        conditions = [c for c in action.get("condition", []) if c.get("kind") == "applicability"]
        if not conditions:
            return True
        name, values = self.library_results(plan)
        for i, c in enumerate(conditions):
            expr = c.get("expression") or {}
            if expr.get("language") not in CQL_IDENTIFIER:
                raise _content_error(
                    plan,
                    f"{path}.condition[{i}].expression.language",
                    f"language {expr.get('language')!r} is not evaluated locally; use text/cql-identifier",
                )
            ident = expr.get("expression")
            if ident not in values:
                raise _content_error(
                    plan,
                    f"{path}.condition[{i}].expression.expression",
                    f"no define {ident!r} in library {name}",
                )
            # As in HAPI: only a true Boolean meets a condition; null or anything else does not.
            if values[ident] is not True:
                return False
        return True

    def dynamic_text(self, plan: dict[str, Any], action: dict[str, Any], target: str) -> str | None:
        for dv in action.get("dynamicValue", []):
            expr = dv.get("expression") or {}
            if dv.get("path") == target and expr.get("language") in CQL_IDENTIFIER:
                _, values = self.library_results(plan)
                value = values.get(str(expr.get("expression")))
                if isinstance(value, str):
                    return value
        return None

    def activities(self, plan: dict[str, Any], action: dict[str, Any], path: str) -> list[Activity]:
        """Activities of an applicable action and of its applicable sub-actions, in order."""
        out: list[Activity] = []
        ref = action.get("definitionCanonical")
        if isinstance(ref, str):
            ad = self.pkg.resolve(ref)
            if ad is None or ad.get("resourceType") != "ActivityDefinition":
                raise _content_error(
                    plan, f"{path}.definitionCanonical", f"{ref} is not an ActivityDefinition in the package"
                )
            out.append(Activity(str(ad.get("kind")), sorted(activity_codes(ad)), str(ad.get("id"))))
        for i, sub in enumerate(action.get("action", [])):
            if self.conditions_met(plan, sub, f"{path}.action[{i}]"):
                out.extend(self.activities(plan, sub, f"{path}.action[{i}]"))
        return out

    def recommendation(self, plan: dict[str, Any]) -> Recommendation | None:
        fired: Recommendation | None = None
        for i, action in enumerate(plan.get("action", [])):
            path = f"action[{i}]"
            if not self.conditions_met(plan, action, path):
                continue
            docs = action.get("documentation") or []
            source = docs[0].get("citation", "") if docs and isinstance(docs[0], dict) else ""
            detail = self.dynamic_text(plan, action, "action.description") or action.get("description", "")
            if fired is None:
                fired = Recommendation(
                    str(plan["id"]),
                    str(action.get("title") or plan.get("title", "")),
                    str(source),
                    str(detail),
                )
            fired.activities.extend(self.activities(plan, action, path))
        return fired

    def walk(self, plan: dict[str, Any], actions: list[dict[str, Any]], path: str, out: list[Recommendation]) -> None:
        """Follow a pathway's actions to the recommendation PlanDefinitions they reach."""
        for i, action in enumerate(actions):
            here = f"{path}[{i}]"
            if not self.conditions_met(plan, action, here):
                continue
            ref = action.get("definitionCanonical")
            target = self.pkg.resolve(ref) if isinstance(ref, str) else None
            if isinstance(ref, str) and target is None:
                raise _content_error(plan, f"{here}.definitionCanonical", f"{ref} is not in the package")
            if target is not None and target.get("resourceType") == "PlanDefinition":
                if _is_pathway(target):
                    self.walk(target, target.get("action", []), "action", out)
                else:
                    rec = self.recommendation(target)
                    if rec is not None:
                        out.append(rec)
            self.walk(plan, action.get("action", []), f"{here}.action", out)


def _is_pathway(plan: dict[str, Any]) -> bool:
    codes = {c.get("code") for c in (plan.get("type") or {}).get("coding", []) if c.get("system") == PLAN_TYPE_SYSTEM}
    return "clinical-protocol" in codes


def pathways(pkg: Package) -> list[dict[str, Any]]:
    found = [r for r in pkg.resources if r.get("resourceType") == "PlanDefinition" and _is_pathway(r)]
    if not found:
        raise ContentError(
            "the package has no pathway (PlanDefinition of type clinical-protocol)",
            [
                Finding(
                    "error",
                    "fhir_resources/plandefinition",
                    "",
                    "add the pathway PlanDefinition (type clinical-protocol)",
                    "recommend",
                )
            ],
        )
    return sorted(found, key=lambda r: str(r.get("id")))


def walk_pathways(pkg: Package, fetch: LibraryResults) -> list[Recommendation]:
    """The recommendations that fire, in pathway order, given each library's results from `fetch`.

    `fetch` is called at most once per library, and only for libraries the walk reaches; it may
    raise to stop the walk (population mode does, to batch the evaluation of many patients).
    """
    ev = _Evaluator(pkg, fetch)
    out: list[Recommendation] = []
    for pathway in pathways(pkg):
        ev.walk(pathway, pathway.get("action", []), "action", out)
    # A recommendation reached twice (two pathways) is reported once.
    unique: dict[str, Recommendation] = {}
    for r in out:
        unique.setdefault(r.id, r)
    return list(unique.values())
