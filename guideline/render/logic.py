"""The package's CQL as the pages show it: definitions with their source text, conditions in plain language.

What the logic uses (definitions, value sets, codes, across includes) is read from the ELM by
`guideline.core.elm`; this module adds what only readers need: the CQL text behind each locator,
and a condition's tree of all/any/not over named definitions.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from guideline.content.package import Package
from guideline.core import elm
from guideline.render.model import Coding, Condition, Definition, Plain, anchor, humanize

# Plain-language trees stop expanding named definitions below this depth (the CQL is shown anyway).
PLAIN_DEPTH = 4


@dataclass(frozen=True)
class Closure:
    """What some definitions use: the definitions (meeting order), value-set URLs and codes (library, name)."""

    definitions: tuple[Definition, ...]
    value_sets: tuple[str, ...]
    codes: tuple[tuple[str, str], ...]


class Logic:
    """The package's CQL: ELM for structure, the Library's text/cql for what readers see."""

    def __init__(self, pkg: Package) -> None:
        self.elms = pkg.elm
        self.lines: dict[str, list[str]] = {}
        for r in pkg.resources:
            if r["resourceType"] != "Library" or r.get("name") not in self.elms:
                continue
            for c in r.get("content", []):
                if c.get("contentType") == "text/cql" and isinstance(c.get("data"), str):
                    self.lines[r["name"]] = base64.b64decode(c["data"]).decode("utf-8").splitlines()

    def _located(self, lib: str, locator: str | None) -> tuple[list[str], tuple[int, int, int, int] | None]:
        """A library's CQL lines and a locator's span in them (None without text or a readable locator)."""
        lines = self.lines.get(lib) or []
        return lines, (elm.locator_lines(locator) if lines else None)

    def source(self, lib: str, locator: str | None) -> str:
        """The CQL lines a locator spans, with the line comments directly above (they say why)."""
        lines, span = self._located(lib, locator)
        if span is None:
            return ""
        first, _, last, _ = span
        start = first - 1
        while start > 0 and lines[start - 1].lstrip().startswith("//"):
            start -= 1
        return "\n".join(lines[start:last]).rstrip()

    def fragment(self, lib: str, locator: str | None) -> str:
        """The exact CQL text of an expression (a locator's span), on one line."""
        lines, span = self._located(lib, locator)
        if span is None:
            return ""
        l1, c1, l2, c2 = span
        if l1 == l2:
            text = lines[l1 - 1][c1 - 1 : c2]
        else:
            text = "\n".join([lines[l1 - 1][c1 - 1 :], *lines[l1 : l2 - 1], lines[l2 - 1][:c2]])
        return " ".join(text.split())

    def definition(self, lib: str, name: str) -> Definition | None:
        """The define, function (all its overloads) or parameter `name` of `lib`, with its CQL text."""
        stmts = elm.statements(self.elms.get(lib), name)
        if stmts:
            kind = "function" if stmts[0].get("type") == "FunctionDef" else "define"
            cql = "\n\n".join(self.source(lib, s.get("locator")) for s in stmts)
            return Definition(lib, name, kind, cql)
        p = elm.parameter(self.elms.get(lib), name)
        if p is not None:
            return Definition(lib, name, "parameter", self.source(lib, p.get("locator")))
        return None

    def closure(self, roots: list[tuple[str, str]]) -> Closure:
        """Every definition, value set and code the roots use, across included libraries (not FHIRHelpers)."""
        found = elm.reached(self.elms, roots)
        definitions = (self.definition(lib, name) for lib, name in found.definitions)
        return Closure(tuple(d for d in definitions if d is not None), tuple(found.value_sets), tuple(found.codes))

    def first_line(self, lib: str, name: str) -> int:
        """Where a definition starts in its library's CQL (0 if unknown)."""
        doc = self.elms.get(lib)
        d = next(iter(elm.statements(doc, name)), None) or elm.parameter(doc, name)
        span = elm.locator_lines(d.get("locator")) if d is not None else None
        return span[0] if span is not None else 0

    def code(self, lib: str, name: str) -> Coding | None:
        """The CQL `code` declaration `name` of `lib`, as the pages show a coding."""
        d = elm.code_def(self.elms, lib, name)
        return Coding(d.system, d.code, d.display) if d is not None else None

    # -------------------------------------------------------- plain language

    def _resolve_ref(self, lib: str, node: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        target = elm.ref_library(self.elms, lib, node)
        if target is None or target == elm.FHIRHELPERS:
            return lib, None
        stmts = elm.statements(self.elms.get(target), node["name"])
        return target, (stmts[0] if stmts else None)

    def plain(self, lib: str, expr: dict[str, Any], depth: int = 0) -> Plain:
        """An expression as all/any/not over named definitions, expanded PLAIN_DEPTH deep; CQL text at the leaves."""
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
                stmts = elm.statements(self.elms.get(lib), expr["name"])
                inner = stmts[0].get("expression") if stmts else None
                if isinstance(inner, dict) and inner.get("type") in ("And", "Or", "Not", "ExpressionRef"):
                    return self.summary(lib, inner, nested)
            return humanize(str(expr["name"]))
        return self.fragment(lib, expr.get("locator")) or str(t)

    def condition(self, lib: str, name: str) -> Condition | None:
        """The applicability condition the define `name` of `lib` decides (None unless it is a define)."""
        d = self.definition(lib, name)
        stmts = elm.statements(self.elms.get(lib), name)
        if d is None or not stmts or not isinstance(stmts[0].get("expression"), dict):
            return None
        expr = stmts[0]["expression"]
        top = self.plain(lib, {"type": "ExpressionRef", "name": name})
        plain = top.children[0] if top.children else top
        return Condition(d, plain, self.summary(lib, expr))
