"""Layer 5, CQL wiring: Libraries carry their CQL, includes and value sets resolve, expressions name defines."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from guideline.core import elm
from guideline.core.errors import Finding
from guideline.core.fhir import CQL_IDENTIFIER_LANGUAGES, iter_actions, primary_library
from guideline.validation.subject import CqlLib, Item, Subject, list_of

CQL = "cql"
# Condition kinds whose expression must be Boolean (PlanDefinition.action.condition.kind, R4).
_BOOLEAN_KINDS = ("applicability", "start", "stop", None)


def cql_findings(s: Subject) -> list[Finding]:
    """Layer 5: the package's Libraries, CQL libraries and CQL expressions fit together.

    Enforces Using CQL with FHIR (STU2) Conformance Requirements 2.1 (Library Declaration) and 4.1
    (Library Resources): every logic Library carries CQL whose `library` declaration has the
    Library's name and version (servers resolve CQL includes by Library.name), and every CQL
    library has its Library. CQL 1.5 Author's Guide "Libraries" (an `include ... version` names
    a library of that version in the package) and "Terminology" (a `valueset` declaration names a
    ValueSet of the package by its canonical url). CPG STU2 (cpg-computableplandefinition,
    cpg-computableactivity): an Expression of language text/cql-identifier names a define (not a
    function) of the resource's one primary Library, and an applicability/start/stop condition
    is Boolean (FHIR R4 PlanDefinition.action.condition.expression: "returns true or false").
    """
    out: list[Finding] = []
    for it in s.items:
        if it.rtype == "Library":
            out.extend(_library_findings(s, it))
    by_name = {lib.item.str_field("name"): lib.item for lib in s.libs.values() if lib.item}
    for lib in s.libs.values():
        if lib.item is None and lib.name != "FHIRHelpers":
            out.append(
                Finding(
                    "error",
                    lib.file,
                    lib.header_loc(),
                    f"CQL library {lib.name} has no Library resource; add "
                    f"fhir_resources/library/library-{lib.name}.json (id and name {lib.name})",
                    CQL,
                )
            )
        if lib.elm is None or lib.name == "FHIRHelpers":
            continue
        out.extend(_include_findings(s, lib, by_name))
        out.extend(_value_set_findings(s, lib))
    for it in s.items:
        if it.rtype in ("PlanDefinition", "ActivityDefinition"):
            out.extend(_expressions(s, it))
    return out


# ---------------------------------------------------------------- Libraries and CQL libraries


def _library_findings(s: Subject, it: Item) -> list[Finding]:
    """A Library resource: it carries CQL, and its name and version are the CQL library's."""
    lib = s.lib_of_item.get(id(it))
    if lib is None and not it.external:
        name = it.str_field("name") or it.rid
        if name in s.failed_cql or it.rid in s.failed_cql:
            return []
        content = it.resource.get("content")
        # Any JSON value may stand where the list belongs (schema findings report it): only a list is looked into.
        has_content = isinstance(content, list) and any(
            isinstance(c, dict) and c.get("contentType") == "text/cql" for c in content
        )
        if has_content:
            return []
        return [
            Finding(
                "error",
                it.file,
                it.at("content"),
                f"Library {it.rid} has no CQL: add {s.cql_hint.format(name=it.rid)} starting "
                f"`library {it.rid} version '{it.str_field('version') or '1.0.0'}'` "
                "(build generates content from it)",
                CQL,
            )
        ]
    if lib is None or lib.name == "FHIRHelpers":
        return []
    out: list[Finding] = []
    lname, lver = it.str_field("name"), it.str_field("version")
    if lname != lib.name:
        out.append(
            Finding(
                "error",
                it.file,
                it.at("name"),
                f"Library.name '{lname}' must equal the CQL library name '{lib.name}' "
                "(servers resolve CQL includes by Library.name); set name to "
                f"'{lib.name}'",
                CQL,
            )
        )
    if lib.version != lver:
        out.append(
            Finding(
                "error",
                lib.file,
                lib.header_loc(),
                f"CQL library {lib.name} declares version '{lib.version}' but Library/{it.rid} "
                f"has version '{lver}'; change the header to `library {lib.name} version "
                f"'{lver}'` (one version for the whole package)",
                CQL,
            )
        )
    return out


def _include_findings(s: Subject, lib: CqlLib, by_name: dict[str | None, Item]) -> list[Finding]:
    """Each `include` names a Library of the package, of the version it asks for."""
    out: list[Finding] = []
    for inc in lib.defs("includes"):
        path, ver = inc.get("path"), inc.get("version")
        if not isinstance(path, str) or path == "FHIRHelpers":
            continue
        target = by_name.get(path)
        if target is None:
            out.append(
                Finding(
                    "error",
                    lib.file,
                    lib.loc(inc),
                    f"includes {path}, but the package has no Library named {path}; add "
                    f"{s.cql_hint.format(name=path)} and its Library resource",
                    CQL,
                )
            )
        elif ver and target.str_field("version") != ver:
            out.append(
                Finding(
                    "error",
                    lib.file,
                    lib.loc(inc),
                    f"includes {path} version '{ver}', but Library/{target.rid} has version "
                    f"'{target.str_field('version')}'; include version "
                    f"'{target.str_field('version')}'",
                    CQL,
                )
            )
    return out


def _value_set_findings(s: Subject, lib: CqlLib) -> list[Finding]:
    """Each `valueset` declaration names a ValueSet of the package (of the version it asks for)."""
    out: list[Finding] = []
    for vs in lib.defs("valueSets"):
        url = vs.get("id")
        if not isinstance(url, str):
            continue
        targets = [t for t in s.resolve(url) if t.rtype == "ValueSet"]
        ver = vs.get("version")
        if not targets:
            tail = url.rstrip("/").rsplit("/", 1)[-1]
            out.append(
                Finding(
                    "error",
                    lib.file,
                    lib.loc(vs),
                    f"valueset \"{vs.get('name')}\" ('{url}') is not in the package; add "
                    f"fhir_resources/valueset/valueset-{tail}.json (with an expansion) whose url is "
                    "exactly this, or fix the URL",
                    CQL,
                )
            )
        elif isinstance(ver, str) and ver not in {t.str_field("version") for t in targets}:
            out.append(
                Finding(
                    "error",
                    lib.file,
                    lib.loc(vs),
                    f"valueset \"{vs.get('name')}\" asks for version '{ver}', but the package has "
                    f"version '{targets[0].str_field('version')}'",
                    CQL,
                )
            )
    return out


# ---------------------------------------------------------------- expressions naming defines


@dataclass(frozen=True)
class _Expr:
    """An Expression of a PlanDefinition or ActivityDefinition, where it is and what it is for."""

    location: str
    role: str  # "condition" | "dynamicValue"
    expression: dict[str, Any]
    kind: str | None  # the condition's kind (None for a dynamic value, or when missing)


def _collect(it: Item) -> list[_Expr]:
    """Conditions and dynamic values of a resource's actions (nested too), in document order."""
    exprs: list[_Expr] = []
    if it.rtype == "PlanDefinition":
        for step in iter_actions(it.resource):
            for j, c in enumerate(list_of(step.action, "condition")):
                if isinstance(c, dict) and isinstance(c.get("expression"), dict):
                    kind = c.get("kind") if isinstance(c.get("kind"), str) else None
                    loc = it.at_path(step.path, "condition", j, "expression")
                    exprs.append(_Expr(loc, "condition", c["expression"], kind))
            for j, d in enumerate(list_of(step.action, "dynamicValue")):
                if isinstance(d, dict) and isinstance(d.get("expression"), dict):
                    loc = it.at_path(step.path, "dynamicValue", j, "expression")
                    exprs.append(_Expr(loc, "dynamicValue", d["expression"], None))
    else:
        for j, d in enumerate(list_of(it.resource, "dynamicValue")):
            if isinstance(d, dict) and isinstance(d.get("expression"), dict):
                exprs.append(_Expr(it.at("dynamicValue", j, "expression"), "dynamicValue", d["expression"], None))
    return exprs


def _primary_library(s: Subject, it: Item) -> tuple[CqlLib | None, str | None]:
    """(the primary Library's CQL, or None; why not, when it matters)."""
    canonical = primary_library(it.resource)
    if canonical is None:
        libs = it.resource.get("library")
        if isinstance(libs, list) and len(libs) > 1:
            return None, (
                f"{it.rtype} {it.rid} has {len(libs)} libraries, but CQL identifiers are evaluated in "
                "one primary library (CPG); keep only the Library that defines them"
            )
        return None, (
            f"{it.rtype} {it.rid} uses CQL identifiers but has no library; add library: "
            f'["Library/<name>"] naming the Library that defines them'
        )
    targets = [t for t in s.resolve(canonical) if t.rtype == "Library"]
    if not targets:
        return None, None  # reported by the references layer
    return s.lib_of_item.get(id(targets[0])), None


def _expressions(s: Subject, it: Item) -> list[Finding]:
    """Each text/cql-identifier expression names a define of the primary library, of the right type."""
    named = [e for e in _collect(it) if _language(e.expression) in CQL_IDENTIFIER_LANGUAGES]
    if not named:
        return []
    out: list[Finding] = []
    lib, why = _primary_library(s, it)
    if why:
        out.append(Finding("error", it.file, it.at("library"), why, CQL))
    if lib is None or lib.elm is None:
        return out
    statements = {d.get("name"): d for d in lib.defs("statements") if isinstance(d.get("name"), str)}
    for e in named:
        out.extend(_named_define(it, lib, statements, e))
    return out


def _language(expression: dict[str, Any]) -> str | None:
    language = expression.get("language")
    return language if isinstance(language, str) else None


def _named_define(it: Item, lib: CqlLib, statements: dict[Any, dict[str, Any]], e: _Expr) -> list[Finding]:
    """One identifier: not empty, a define of `lib` (not a function), Boolean for a condition."""
    name = e.expression.get("expression")
    if not isinstance(name, str) or not name.strip():
        return [
            Finding("error", it.file, e.location, "empty CQL identifier: name a define of the primary library", CQL)
        ]
    d = statements.get(name)
    if d is None:
        options = [str(n) for n in statements if n != "Patient"]
        where = lib.file if not lib.pos_prefix else f"Library/{lib.item.rid if lib.item else lib.name}"
        return [
            Finding(
                "error",
                it.file,
                e.location,
                f'{e.role} names define "{name}", which library {lib.name} ({where}) does not '
                f'define{_close(name, options)}; add `define "{name}":` to the CQL or fix the name',
                CQL,
            )
        ]
    if d.get("type") == "FunctionDef" or d.get("operand"):
        return [
            Finding(
                "error",
                it.file,
                e.location,
                f'"{name}" in {lib.name} is a function; a {e.role} must name a define '
                "(an expression without arguments)",
                CQL,
            )
        ]
    if e.role != "condition" or e.kind not in _BOOLEAN_KINDS:
        return []
    tname = d.get("resultTypeName")
    if tname is None and d.get("resultTypeSpecifier") is None:
        return [
            Finding(
                "warning",
                lib.file,
                lib.loc(d),
                f'define "{name}" has no result type in the ELM; compile with '
                "EnableResultTypes so its Boolean type can be checked",
                CQL,
            )
        ]
    if tname != elm.ELM_BOOLEAN:
        return [
            Finding(
                "error",
                it.file,
                e.location,
                f'{e.kind or "condition"} condition "{name}" returns {_type_name(d)}, not Boolean; '
                f'name a Boolean define (e.g. define "{name} Exists": exists "{name}")',
                CQL,
            )
        ]
    return []


def _close(name: str, options: list[str]) -> str:
    m = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return f' (did you mean "{m[0]}"?)' if m else ""


def _type_name(node: dict[str, Any]) -> str:
    if isinstance(node.get("resultTypeName"), str):
        return str(node["resultTypeName"]).replace(elm.ELM_NS, "System.").replace(elm.FHIR_NS, "FHIR.")
    spec = node.get("resultTypeSpecifier")
    if isinstance(spec, dict):
        if spec.get("type") == "ListTypeSpecifier":
            inner = spec.get("elementType")
            inner = inner if isinstance(inner, dict) else {}
            return f"List<{_type_name({'resultTypeName': inner.get('name')}) if inner.get('name') else '...'}>"
        return str(spec.get("type", "unknown type")).removesuffix("TypeSpecifier")
    return "an unknown type"
