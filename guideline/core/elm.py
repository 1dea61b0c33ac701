"""Reading compiled CQL (ELM JSON): sections, include aliases, references, retrieves, value sets and result types.

Every stage that looks inside ELM asks this module, so that a reference means the same thing
everywhere. An ELM library is the translator's JSON document (`{"library": {...}}`); `elms` maps
library names (the `include` paths) to those documents, as `Package.elm` does.

A reference to another library (`ExpressionRef`, `ValueSetRef`, `CodeRef`... with `libraryName`)
names that library by the *alias* the including library gave it (`include GLCommon called
Common` gives `"libraryName": "Common"`); the include definition maps the alias (its
`localIdentifier`) to the library's name (its `path`). See the ELM specification, "Library":
https://cql.hl7.org/elm/schema/library.xsd (IncludeDef).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

FHIRHELPERS = "FHIRHelpers"
ELM_NS = "{urn:hl7-org:elm-types:r1}"
FHIR_NS = "{http://hl7.org/fhir}"
ELM_BOOLEAN = f"{ELM_NS}Boolean"
ELM_DECIMAL = f"{ELM_NS}Decimal"
# CQL system types as the FHIR types a Library.parameter declares (FHIR R4 ParameterDefinition.type).
_SYSTEM_TYPES = {
    "Boolean": "boolean",
    "Integer": "integer",
    "Decimal": "decimal",
    "String": "string",
    "DateTime": "dateTime",
    "Date": "date",
    "Time": "time",
    "Quantity": "Quantity",
    "Code": "Coding",
    "Concept": "CodeableConcept",
}
# The node types that name a definition (a define, a function or a parameter) by name.
DEFINITION_REFS = ("ExpressionRef", "FunctionRef", "ParameterRef")
_LOCATOR = re.compile(r"^(\d+):(\d+)-(\d+):(\d+)$")

Elms = Mapping[str, Mapping[str, Any]]

# ---------------------------------------------------------------- sections and names


def body(elm: Mapping[str, Any] | None) -> dict[str, Any]:
    """The `library` object of an ELM document ({} when there is none)."""
    lib = (elm or {}).get("library")
    return lib if isinstance(lib, dict) else {}


def defs(elm: Mapping[str, Any] | None, section: str) -> list[dict[str, Any]]:
    """The definitions of an ELM section (`statements`, `includes`, `valueSets`, `codes`, `parameters`...).

    Malformed ELM (a carried library is anyone's JSON) gives what can be read, never a crash:
    validation reports what is wrong with it.
    """
    sec = body(elm).get(section)
    items = sec.get("def") if isinstance(sec, dict) else None
    return [d for d in items if isinstance(d, dict)] if isinstance(items, list) else []


def statements(elm: Mapping[str, Any] | None, name: str | None = None) -> list[dict[str, Any]]:
    """A library's statements (defines and functions), or only those called `name` (a function may be overloaded)."""
    return [s for s in defs(elm, "statements") if name is None or s.get("name") == name]


def statement_names(elm: Mapping[str, Any] | None) -> set[str]:
    """The names of a library's statements."""
    return {str(s["name"]) for s in statements(elm) if isinstance(s.get("name"), str)}


def parameter(elm: Mapping[str, Any] | None, name: str) -> dict[str, Any] | None:
    """A library's CQL parameter called `name`, if it declares one."""
    return next((p for p in defs(elm, "parameters") if p.get("name") == name), None)


def includes(elm: Mapping[str, Any] | None) -> list[tuple[str, str | None]]:
    """(library name, version) of every library this one includes, in declaration order."""
    return [(str(d["path"]), d.get("version")) for d in defs(elm, "includes") if isinstance(d.get("path"), str)]


def include_aliases(elm: Mapping[str, Any] | None) -> dict[str, str]:
    """{alias: included library's name}: an include without `called` is known by the library's own name."""
    return {
        str(d.get("localIdentifier", d["path"])): str(d["path"])
        for d in defs(elm, "includes")
        if isinstance(d.get("path"), str)
    }


def ref_library(elms: Elms, library: str, node: Mapping[str, Any]) -> str | None:
    """The name of the library a reference in `library` points into.

    A node without `libraryName` is local; one with it names an include alias of `library`, so
    the alias goes through that library's includes (None when it names no include).
    """
    alias = node.get("libraryName")
    if not isinstance(alias, str) or not alias:
        return library
    return include_aliases(elms.get(library)).get(alias)


def include_closure(name: str, elms: Elms) -> list[str]:
    """`name` and every library it includes, directly or not (FHIRHelpers and libraries not in `elms` left out)."""
    seen: list[str] = []
    stack = [name]
    while stack:
        n = stack.pop()
        if n in seen or n not in elms or n == FHIRHELPERS:
            continue
        seen.append(n)
        stack.extend(p for p, _ in includes(elms[n]))
    return seen


def locator_lines(locator: Any) -> tuple[int, int, int, int] | None:
    """(first line, first column, last line, last column) of an ELM locator `l1:c1-l2:c2`, or None."""
    m = _LOCATOR.match(locator if isinstance(locator, str) else "")
    if not m:
        return None
    l1, c1, l2, c2 = (int(g) for g in m.groups())
    return l1, c1, l2, c2


# ---------------------------------------------------------------- value sets and codes


def value_set_url(elms: Elms, library: str, ref: Mapping[str, Any]) -> str | None:
    """The canonical URL a `ValueSetRef` in `library` names (its own value set, or one of an included library)."""
    target = ref_library(elms, library, ref)
    if target is None:
        return None
    for vs in defs(elms.get(target), "valueSets"):
        if vs.get("name") == ref.get("name") and isinstance(vs.get("id"), str):
            return str(vs["id"])
    return None


@dataclass(frozen=True)
class CodeDef:
    """A CQL `code` declaration: its code system's URL, the code and its display."""

    system: str
    code: str
    display: str


def code_def(elms: Elms, library: str, name: str) -> CodeDef | None:
    """The `code` declaration `name` of `library`, with its code system's name resolved to its URL."""
    systems = {d.get("name"): d.get("id") for d in defs(elms.get(library), "codeSystems")}
    for d in defs(elms.get(library), "codes"):
        if d.get("name") == name:
            sysname = str((d.get("codeSystem") or {}).get("name", ""))
            return CodeDef(str(systems.get(sysname, sysname)), str(d.get("id", "")), str(d.get("display", "")))
    return None


# ---------------------------------------------------------------- walking expressions


def nodes(node: Any, *, skip_annotations: bool = False) -> Iterator[dict[str, Any]]:
    """Every object under `node`, depth-first (annotations skipped on request: they hold source text, not logic)."""
    if isinstance(node, dict):
        yield node
        for k, v in node.items():
            if not (skip_annotations and k == "annotation"):
                yield from nodes(v, skip_annotations=skip_annotations)
    elif isinstance(node, list):
        for v in node:
            yield from nodes(v, skip_annotations=skip_annotations)


def retrieves(node: Any) -> Iterator[dict[str, Any]]:
    """Every `Retrieve` under `node` (an ELM document, a statement or any expression)."""
    return (n for n in nodes(node) if n.get("type") == "Retrieve")


@dataclass
class Reached:
    """What some definitions use across the libraries they reach: definitions, value sets, codes, in meeting order."""

    definitions: dict[tuple[str, str], None] = field(default_factory=dict)  # (library, name), ordered
    value_sets: dict[str, None] = field(default_factory=dict)  # URLs, ordered
    codes: dict[tuple[str, str], None] = field(default_factory=dict)  # (library, code name), ordered


def _defined(elms: Elms, library: str, name: str) -> bool:
    return bool(statements(elms.get(library), name)) or parameter(elms.get(library), name) is not None


def reached(elms: Elms, roots: Iterable[tuple[str, str]]) -> Reached:
    """Every definition, value set and code the roots (library, name) use, across includes (not FHIRHelpers).

    Definitions are defines, functions (every overload) and parameters; a parameter's default
    is followed too. Breadth-first, so nearer definitions come first.
    """
    out = Reached()
    queue: list[tuple[str, str]] = []

    def add(library: str | None, name: str) -> None:
        if library is None or library == FHIRHELPERS or library not in elms or (library, name) in out.definitions:
            return
        if _defined(elms, library, name):
            out.definitions[(library, name)] = None
            queue.append((library, name))

    def visit(library: str, node: Any) -> None:
        for n in nodes(node, skip_annotations=True):
            t, name = n.get("type"), n.get("name")
            if not isinstance(name, str):
                continue
            if t in DEFINITION_REFS:
                add(ref_library(elms, library, n), name)
            elif t == "ValueSetRef":
                url = value_set_url(elms, library, n)
                if url is not None:
                    out.value_sets[url] = None
            elif t == "CodeRef":
                target = ref_library(elms, library, n)
                if target is not None and target != FHIRHELPERS:
                    out.codes[(target, name)] = None

    for library, name in roots:
        add(library, name)
    while queue:
        library, name = queue.pop(0)
        for s in statements(elms.get(library), name):
            visit(library, s.get("expression"))
        p = parameter(elms.get(library), name)
        if p is not None:
            visit(library, p.get("default"))
    return out


def used_statements(name: str, elms: Elms) -> dict[str, list[dict[str, Any]]]:
    """Per library, the statements `name` can evaluate: all of its own, and of its includes only those reached.

    A definition of an included library that nothing here refers to (directly or through other definitions)
    is left out, so a recommendation's data requirements (its CDS prefetch) list only what its logic reads.
    """
    roots = [(name, str(s["name"])) for s in statements(elms.get(name)) if isinstance(s.get("name"), str)]
    used: dict[str, list[dict[str, Any]]] = {}
    for library, definition in reached(elms, roots).definitions:
        used.setdefault(library, []).extend(statements(elms.get(library), definition))
    return used


# ---------------------------------------------------------------- data requirements


def _code_filter(elms: Elms, library: str, retrieve: Mapping[str, Any]) -> dict[str, Any]:
    """The DataRequirement.codeFilter of a retrieve: its value set, or the codes it names ({} for neither)."""
    path = retrieve.get("codeProperty", "code")
    c = retrieve.get("codes") or {}
    if c.get("type") == "ValueSetRef":
        url = value_set_url(elms, library, c)
        return {"path": path, "valueSet": url} if url is not None else {}
    items: list[Any] = [c]
    if c.get("type") == "ToList":
        items = c["element"] if isinstance(c.get("element"), list) else [c.get("operand")]
    codings = []
    for it in items:
        target = ref_library(elms, library, it) if isinstance(it, dict) and it.get("type") == "CodeRef" else None
        d = code_def(elms, target, str(it.get("name", ""))) if target is not None else None
        if d is None:
            # A code the filter computes (or cannot be resolved) would be missing from a partial list: a reader
            # trusting the filter (prefetch, the population push-down) would drop what the retrieve returns.
            return {}
        codings.append({"system": d.system, "code": d.code})
    return {"path": path, "code": codings} if codings else {}


def data_requirements(
    names: list[str], elms: Elms, used: Mapping[str, list[dict[str, Any]]] | None = None
) -> list[dict[str, Any]]:
    """FHIR DataRequirements for every retrieve in the given libraries (HAPI builds CDS prefetch from these).

    `used` (from used_statements) limits each library to the statements listed for it. A retrieve
    filtered by a value set, or by codes, carries that filter.
    """
    reqs: dict[str, dict[str, Any]] = {}
    for name in names:
        scope = body(elms[name]).get("statements") if used is None else used.get(name, [])
        for r in retrieves(scope):
            req: dict[str, Any] = {"type": str(r.get("dataType", "")).split("}")[-1]}
            cf = _code_filter(elms, name, r)
            if cf:
                req["codeFilter"] = [cf]
            reqs[json.dumps(req, sort_keys=True)] = req
    return [reqs[k] for k in sorted(reqs)]


# ---------------------------------------------------------------- result types


def fhir_type(type_name: str | None) -> str:
    """The FHIR type a CQL type name stands for (FHIR types as they are, system types mapped, else `Any`)."""
    if not type_name:
        return "Any"
    local = type_name.split("}")[-1]
    if type_name.startswith(FHIR_NS):
        return local
    return _SYSTEM_TYPES.get(local, "Any")


def result_type(node: Mapping[str, Any]) -> tuple[str, str]:
    """(FHIR type, max cardinality) of an ELM definition, from its result type annotation."""
    if "resultTypeName" in node:
        return fhir_type(node["resultTypeName"]), "1"
    spec = node.get("resultTypeSpecifier") or node.get("parameterTypeSpecifier") or {}
    if spec.get("type") == "ListTypeSpecifier":
        el = spec.get("elementType") or {}
        return fhir_type(el.get("name")), "*"
    if spec.get("type") == "NamedTypeSpecifier":
        return fhir_type(spec.get("name")), "1"
    return "Any", "1"


def define_types(elm: Mapping[str, Any] | None) -> dict[str, str | None]:
    """{define name: its result type} of an ELM, functions left out (None when the ELM records no type).

    A type name is given as it is; a type specifier (a list, a tuple) as its canonical JSON.
    """
    out: dict[str, str | None] = {}
    for d in statements(elm):
        if not isinstance(d.get("name"), str) or d.get("type") == "FunctionDef":
            continue
        if isinstance(d.get("resultTypeName"), str):
            out[d["name"]] = d["resultTypeName"]
        elif d.get("resultTypeSpecifier") is not None:
            out[d["name"]] = json.dumps(d["resultTypeSpecifier"], sort_keys=True)
        else:
            out[d["name"]] = None
    return out


def decimal_paths(spec: Any, path: str = "") -> set[str]:
    """Where a CQL result type holds a Decimal: "" for the value itself, "a.b" for tuple element b of element a.

    cql-execution gives the Decimal 5.0 as the number 5, so the ELM result type decides between
    valueDecimal and valueInteger. Lists and interval bounds keep their element's path.
    """
    if not isinstance(spec, dict):
        return set()
    if spec.get("resultTypeName") == ELM_DECIMAL or spec.get("name") == ELM_DECIMAL:
        return {path}
    kind = spec.get("type")
    if kind == "ListTypeSpecifier" or "resultTypeSpecifier" in spec:
        inner = spec.get("elementType") if kind == "ListTypeSpecifier" else spec.get("resultTypeSpecifier")
        return decimal_paths(inner, path)
    if kind == "IntervalTypeSpecifier":
        return decimal_paths(spec.get("pointType"), path)
    if kind == "TupleTypeSpecifier":
        out: set[str] = set()
        for el in spec.get("element") or []:
            out |= decimal_paths(el.get("elementType"), f"{path}.{el.get('name')}".lstrip("."))
        return out
    return set()


def translator_version(elm: Mapping[str, Any] | None) -> str | None:
    """The translator version an ELM records in its CqlToElmInfo annotation (None if it records none)."""
    anns = body(elm).get("annotation")
    for a in anns if isinstance(anns, list) else []:
        if isinstance(a, dict) and a.get("type") == "CqlToElmInfo" and isinstance(a.get("translatorVersion"), str):
            return str(a["translatorVersion"])
    return None
