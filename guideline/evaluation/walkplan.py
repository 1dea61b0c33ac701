"""The document text for the JVM's walk: what the batch evaluator writes, rendered by Python.

The JVM walks the package's PlanDefinitions itself, through the evaluation core shared with the
server (`engine/`, the walk `walk.py` describes); this module renders the text of the
`recommend --json` line it writes (each recommendation's id, each top-level action's static title
and source, each ActivityDefinition's activity as ready-made JSON), so that the JVM writes the line
without Python touching the patient. Every piece of text in the document is rendered here by the same
Python code as `model.document`; the JVM only chooses and joins (a dynamic title is the one text it
encodes itself). Content the Python walk would
reject when it reaches it (no primary library, a non-CQL condition, a missing define or target)
makes `compile_walk` return None, and population mode then walks in Python, which reports it.
"""

from __future__ import annotations

from typing import Any

from guideline.content.package import Package
from guideline.core import elm
from guideline.core.errors import ContentError
from guideline.core.fhir import CQL_IDENTIFIER_LANGUAGES, ActionStep, iter_actions, walk_pathway
from guideline.evaluation.model import Activity
from guideline.evaluation.pushdown import Reads
from guideline.evaluation.records import compact
from guideline.evaluation.walk import pathways


class _Unsupported(Exception):
    """The content needs the Python walk (which reports the problem when a patient reaches it)."""


class _Compiler:
    """Renders a package's card and activity text for the JVM; raises _Unsupported where the Python walk fails."""

    def __init__(self, pkg: Package) -> None:
        self.pkg = pkg
        self.cards: dict[str, dict[str, Any]] = {}
        self.activities: dict[str, dict[str, Any]] = {}

    def library(self, plan: dict[str, Any]) -> str:
        name = self.pkg.primary_library_name(plan)
        if name is None:
            raise _Unsupported(f"{plan.get('id')}: no compiled primary library")
        return name

    def check_conditions(self, step: ActionStep) -> None:
        conds = [c for c in step.action.get("condition", []) if c.get("kind") == "applicability"]
        if not conds:
            return
        lib = self.library(step.plan)
        known = elm.statement_names(self.pkg.elm.get(lib))
        for c in conds:
            expr = c.get("expression") or {}
            ident = expr.get("expression")
            if expr.get("language") not in CQL_IDENTIFIER_LANGUAGES or not isinstance(ident, str) or ident not in known:
                raise _Unsupported(f"{step.plan.get('id')} {step.path}: condition not a define of {lib}")

    def pathway(self, pathway: dict[str, Any]) -> None:
        for reached in walk_pathway(pathway, self.pkg.resolve, missing=_unsupported_reference):
            self.check_conditions(reached.step)
            if reached.recommendation is not None:
                self.recommendation(reached.recommendation)

    def recommendation(self, plan: dict[str, Any]) -> None:
        plan_id = str(plan["id"])
        if plan_id in self.cards:
            return
        actions: dict[str, Any] = {}
        for step in iter_actions(plan):
            self.check_conditions(step)
            if step.top:
                actions[str(step.action.get("id", ""))] = self.card(plan, step)
            self.activity(step)
        self.cards[plan_id] = {"id": compact(plan_id), "actions": actions}

    def card(self, plan: dict[str, Any], step: ActionStep) -> dict[str, Any]:
        """The static card text of a top-level action: its title (a dynamic title is the JVM's) and its source."""
        action = step.action
        for dv in action.get("dynamicValue", []):
            if dv.get("path") in ("action.title", "action.description"):
                self.library(plan)
        docs = action.get("documentation") or []
        source = docs[0].get("citation", "") if docs and isinstance(docs[0], dict) else ""
        return {"title": compact(str(action.get("title") or plan.get("title", ""))), "source": compact(str(source))}

    def activity(self, step: ActionStep) -> None:
        ref = step.action.get("definitionCanonical")
        if not isinstance(ref, str):
            return
        ad = self.pkg.resolve(ref)
        if ad is None or ad.get("resourceType") != "ActivityDefinition":
            raise _Unsupported(f"{ref} is not an ActivityDefinition")
        act = Activity.of_definition(ad)
        self.activities[str(ad["id"])] = {"json": compact(act.as_json()), "order": act.order}


def _unsupported_reference(_: ActionStep, ref: str) -> _Unsupported:
    return _Unsupported(f"{ref} is not in the package")


def compile_walk(pkg: Package, reads: Reads | None = None) -> dict[str, Any] | None:
    """The document text for the JVM's walk (cards, activities, reads), or None if the content needs Python.

    `reads` (default: what the package reads) is what the JVM's own NDJSON reader skips; see pushdown.py.
    """
    comp = _Compiler(pkg)
    try:
        for p in pathways(pkg):
            comp.pathway(p)
    except (_Unsupported, ContentError):
        return None
    return {
        "cards": comp.cards,
        "activities": comp.activities,
        "reads": (reads or Reads.of(pkg)).spec(),
    }
