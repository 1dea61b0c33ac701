"""The pathway walk compiled for the JVM: the shared walk's decisions as a small tree the batch evaluator runs.

`walk.py` is the walk; this module turns a package into the data that walk reads (each action's
applicability defines, the recommendation it reaches, its card and activity as ready-made JSON
text), so that the JVM can walk each patient itself and write the `recommend --json` line without
Python touching the patient. Every piece of text in the document is rendered here by the same
Python code as `model.document`; the JVM only chooses and joins. Content the Python walk would
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
from guideline.evaluation.population import EvaluationPlan
from guideline.evaluation.pushdown import Reads
from guideline.evaluation.records import compact
from guideline.evaluation.walk import pathways


class _Unsupported(Exception):
    """The content needs the Python walk (which reports the problem when a patient reaches it)."""


class _Compiler:
    """Builds the walk tree for one package; raises _Unsupported where the Python walk would fail."""

    def __init__(self, pkg: Package) -> None:
        self.pkg = pkg
        self.recs: list[dict[str, Any]] = []
        self.rec_index: dict[int, int] = {}

    def library(self, plan: dict[str, Any]) -> str:
        name = self.pkg.primary_library_name(plan)
        if name is None:
            raise _Unsupported(f"{plan.get('id')}: no compiled primary library")
        return name

    def conditions(self, step: ActionStep) -> tuple[str | None, list[str]]:
        conds = [c for c in step.action.get("condition", []) if c.get("kind") == "applicability"]
        if not conds:
            return None, []
        lib = self.library(step.plan)
        known = elm.statement_names(self.pkg.elm.get(lib))
        out: list[str] = []
        for c in conds:
            expr = c.get("expression") or {}
            ident = expr.get("expression")
            if expr.get("language") not in CQL_IDENTIFIER_LANGUAGES or not isinstance(ident, str) or ident not in known:
                raise _Unsupported(f"{step.plan.get('id')} {step.path}: condition not a define of {lib}")
            out.append(ident)
        return lib, out

    def pathway(self, pathway: dict[str, Any]) -> list[dict[str, Any]]:
        steps: list[tuple[ActionStep, dict[str, Any]]] = []
        for reached in walk_pathway(pathway, self.pkg.resolve, missing=_unsupported_reference):
            lib, cond = self.conditions(reached.step)
            node: dict[str, Any] = {"lib": lib, "cond": cond, "rec": -1, "sub": []}
            if reached.recommendation is not None:
                node["rec"] = self.recommendation(reached.recommendation)
            steps.append((reached.step, node))
        return _nest(steps)

    def recommendation(self, plan: dict[str, Any]) -> int:
        if id(plan) in self.rec_index:
            return self.rec_index[id(plan)]
        steps: list[tuple[ActionStep, dict[str, Any]]] = []
        for step in iter_actions(plan):
            lib, cond = self.conditions(step)
            node: dict[str, Any] = {"lib": lib, "cond": cond, "sub": []}
            if step.top:
                node["card"] = self.card(plan, step)
            node["activity"] = self.activity(step)
            steps.append((step, node))
        self.recs.append({"id": compact(str(plan["id"])), "plainId": str(plan["id"]), "steps": _nest(steps)})
        self.rec_index[id(plan)] = len(self.recs) - 1
        return len(self.recs) - 1

    def card(self, plan: dict[str, Any], step: ActionStep) -> dict[str, Any]:
        action = step.action
        detail: list[str] = []
        titles: list[str] = []
        lib: str | None = None
        for dv in action.get("dynamicValue", []):
            expr = dv.get("expression") or {}
            if expr.get("language") not in CQL_IDENTIFIER_LANGUAGES:
                continue
            if dv.get("path") == "action.description":
                lib = self.library(plan)
                detail.append(str(expr.get("expression")))
            elif dv.get("path") == "action.title":
                # A dynamic title is the one piece of card text the JVM writes itself (JSON-encoded, as
                # `compact` would): it is the patient's value of a define, not text rendered here.
                lib = self.library(plan)
                titles.append(str(expr.get("expression")))
        docs = action.get("documentation") or []
        source = docs[0].get("citation", "") if docs and isinstance(docs[0], dict) else ""
        return {
            "title": compact(str(action.get("title") or plan.get("title", ""))),
            "source": compact(str(source)),
            "description": compact(str(action.get("description", ""))),
            "lib": lib,
            "detail": detail,
            "titles": titles,
        }

    def activity(self, step: ActionStep) -> dict[str, Any] | None:
        ref = step.action.get("definitionCanonical")
        if not isinstance(ref, str):
            return None
        ad = self.pkg.resolve(ref)
        if ad is None or ad.get("resourceType") != "ActivityDefinition":
            raise _Unsupported(f"{ref} is not an ActivityDefinition")
        act = Activity.of_definition(ad)
        return {"json": compact(act.as_json()), "order": act.order}


def _unsupported_reference(_: ActionStep, ref: str) -> _Unsupported:
    return _Unsupported(f"{ref} is not in the package")


def _nest(steps: list[tuple[ActionStep, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The pre-order steps of `iter_actions` as a tree: depth-first order is kept, children after their parent.

    `iter_actions` yields a step, then (if it is entered) the actions of the plan it names, then its
    sub-actions: all of them are its children here, since the walk skips them all when it does not apply.
    """
    roots: list[dict[str, Any]] = []
    stack: list[tuple[ActionStep, dict[str, Any]]] = []
    for step, node in steps:
        while stack and not _descends(step, stack[-1][0]):
            stack.pop()
        (stack[-1][1]["sub"] if stack else roots).append(node)
        stack.append((step, node))
    return roots


def _descends(step: ActionStep, parent: ActionStep) -> bool:
    """Whether `step` was reached through `parent`: a sub-action of it, or in a plan it leads into."""
    if step.plan is parent.plan:
        return step.path.startswith(parent.path + ".")
    return step.depth > parent.depth


def compile_walk(pkg: Package, reads: Reads | None = None) -> dict[str, Any] | None:
    """The walk tree for the JVM (pathways, recommendations, evaluation plan), or None if the content needs Python.

    `reads` (default: what the package reads) is what the JVM's own NDJSON reader skips; see pushdown.py.
    """
    plan = EvaluationPlan.of(pkg)
    comp = _Compiler(pkg)
    try:
        trees = [comp.pathway(p) for p in pathways(pkg)]
    except (_Unsupported, ContentError):
        return None
    return {
        "gate": plan.gate,
        "reachable": plan.reachable,
        "expressions": plan.expressions,
        "pathways": trees,
        "recs": comp.recs,
        "reads": (reads or Reads.of(pkg)).spec(),
    }
