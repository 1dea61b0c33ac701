"""The pathway walk: which recommendations fire, given each library's define values for one patient."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from guideline.content.package import Package
from guideline.core.errors import ContentError, Finding
from guideline.core.fhir import (
    CQL_IDENTIFIER_LANGUAGES,
    ActionStep,
    is_pathway,
    iter_actions,
    primary_library,
    walk_pathway,
)
from guideline.evaluation.model import Activity, Recommendation


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
        """The name of the plan's primary library and its define values (fetched on first use)."""
        canonical = primary_library(plan)
        if canonical is None:
            raise _content_error(plan, "library", "needs exactly one primary library to evaluate its conditions")
        lib = self.pkg.resolve(canonical)
        if lib is None:
            raise _content_error(plan, "library[0]", f"library {canonical} is not in the package")
        name = lib.get("name")
        if not isinstance(name, str) or name not in self.pkg.elm:
            raise _content_error(lib, "name", f"no compiled CQL library named {name!r} (name must equal the CQL name)")
        if name not in self.results:
            self.results[name] = self.fetch(name)
        return name, self.results[name]

    def applies(self, step: ActionStep) -> bool:
        """Whether every applicability condition of the step's action is true for the patient."""
        conditions = [c for c in step.action.get("condition", []) if c.get("kind") == "applicability"]
        if not conditions:
            return True
        name, values = self.library_results(step.plan)
        for i, c in enumerate(conditions):
            expr = c.get("expression") or {}
            if expr.get("language") not in CQL_IDENTIFIER_LANGUAGES:
                raise _content_error(
                    step.plan,
                    f"{step.path}.condition[{i}].expression.language",
                    f"language {expr.get('language')!r} is not evaluated locally; use text/cql-identifier",
                )
            ident = expr.get("expression")
            if ident not in values:
                raise _content_error(
                    step.plan,
                    f"{step.path}.condition[{i}].expression.expression",
                    f"no define {ident!r} in library {name}",
                )
            # As in HAPI: only a true Boolean meets a condition; null or anything else does not.
            if values[ident] is not True:
                return False
        return True

    def dynamic_text(self, plan: dict[str, Any], action: dict[str, Any], target: str) -> str | None:
        """The patient's value of the action's dynamicValue for `target` (a CQL define), if it is text."""
        for dv in action.get("dynamicValue", []):
            expr = dv.get("expression") or {}
            if dv.get("path") == target and expr.get("language") in CQL_IDENTIFIER_LANGUAGES:
                _, values = self.library_results(plan)
                value = values.get(str(expr.get("expression")))
                if isinstance(value, str):
                    return value
        return None

    def activity(self, step: ActionStep) -> Activity | None:
        """What an applicable action of a recommendation proposes (None for an action with no definition)."""
        ref = step.action.get("definitionCanonical")
        if not isinstance(ref, str):
            return None
        ad = self.pkg.resolve(ref)
        if ad is None or ad.get("resourceType") != "ActivityDefinition":
            raise _content_error(
                step.plan, f"{step.path}.definitionCanonical", f"{ref} is not an ActivityDefinition in the package"
            )
        return Activity.of_definition(ad)

    def recommendation(self, plan: dict[str, Any]) -> Recommendation | None:
        """The recommendation `plan` makes for the patient, or None if none of its actions applies.

        The first applicable action gives the card (its title and detail may be dynamic values);
        every applicable action, sub-actions included, adds what it proposes, in document order.
        """
        fired: Recommendation | None = None
        for step in iter_actions(plan, when=self.applies):
            if step.top:
                detail = self.dynamic_text(plan, step.action, "action.description")
                title = self.dynamic_text(plan, step.action, "action.title")
                if fired is None:
                    fired = Recommendation.from_action(plan, step.action, detail, title)
            activity = self.activity(step)
            if activity is not None and fired is not None:
                fired.activities.append(activity)
        return fired

    def walk(self, pathway: dict[str, Any]) -> list[Recommendation]:
        """The recommendations a pathway reaches through its applicable actions (nested pathways followed)."""
        out: list[Recommendation] = []
        for reached in walk_pathway(pathway, self.pkg.resolve, when=self.applies, missing=_not_in_package):
            if reached.recommendation is not None:
                rec = self.recommendation(reached.recommendation)
                if rec is not None:
                    out.append(rec)
        return out


def _not_in_package(step: ActionStep, ref: str) -> ContentError:
    return _content_error(step.plan, f"{step.path}.definitionCanonical", f"{ref} is not in the package")


def pathways(pkg: Package) -> list[dict[str, Any]]:
    """The package's pathways (PlanDefinitions of type clinical-protocol), by id; ContentError if none."""
    found = [r for r in pkg.resources if r.get("resourceType") == "PlanDefinition" and is_pathway(r)]
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
    A pathway that reaches itself through its actions is a ContentError located at the
    definitionCanonical that closes the loop.
    """
    ev = _Evaluator(pkg, fetch)
    out: list[Recommendation] = []
    for pathway in pathways(pkg):
        out.extend(ev.walk(pathway))
    # A recommendation reached twice (two pathways) is reported once.
    unique: dict[str, Recommendation] = {}
    for r in out:
        unique.setdefault(r.id, r)
    return list(unique.values())
