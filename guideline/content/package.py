"""Builds the knowledge package: compiles CQL, generates Libraries, stamps and writes dist/ atomically."""

from __future__ import annotations

import base64
import copy
import hashlib
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guideline.content.cql import CompileResult, Engine, shared_engine
from guideline.content.sources import Sources, load_sources, rel
from guideline.core import toolchain
from guideline.core.config import Config, load_config
from guideline.core.errors import ContentError, Finding
from guideline.core.fhir import CQL_OPTIONS_EXT, FHIR_MODELINFO_URL, FHIRHELPERS_URL, LIBRARY_TYPE_SYSTEM

# Resource types whose instances are canonical knowledge artifacts stamped from guideline.toml.
CANONICAL_TYPES = (
    "Library",
    "PlanDefinition",
    "ActivityDefinition",
    "ValueSet",
    "CodeSystem",
    "Citation",
    "Questionnaire",
    "StructureDefinition",
)
# Keys whose string values are canonical references; a relative "Type/id" there is expanded.
CANONICAL_KEYS = frozenset(
    {
        "library",
        "definitionCanonical",
        "resource",
        "valueSet",
        "valueCanonical",
        "citeAs",
        "instantiatesCanonical",
        "profile",
        "transform",
        "derivedFrom",
        "partOf",
    }
)
_RELATIVE = re.compile(r"^(" + "|".join(CANONICAL_TYPES) + r")/([A-Za-z0-9\-.]{1,64})$")
# Bundle/package order: dependencies before dependants, so a server loading entries one by
# one (or a reader) meets a library before the plan that uses it.
_TYPE_ORDER = {
    t: i
    for i, t in enumerate(["CodeSystem", "ValueSet", "Citation", "Library", "ActivityDefinition", "PlanDefinition"])
}


@dataclass
class Package:
    """The built, in-memory knowledge package."""

    config: Config
    resources: list[dict[str, Any]] = field(default_factory=list)
    elm: dict[str, dict[str, Any]] = field(default_factory=dict)
    value_sets: dict[str, dict[str, list[dict[str, str]]]] = field(default_factory=dict)
    source_of: dict[str, Path] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    translator: dict[str, str] = field(default_factory=dict)
    # (elm, value_sets, key): hashing ~1 MB of ELM takes ~20 ms, and evaluation asks for the key
    # once per library per patient. Replacing elm or value_sets recomputes it.
    _key_cache: tuple[object, object, str] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def by_url(self) -> dict[str, dict[str, Any]]:
        return {r["url"]: r for r in self.resources if "url" in r}

    @property
    def by_key(self) -> dict[str, dict[str, Any]]:
        return {f"{r['resourceType']}/{r['id']}": r for r in self.resources}

    def resolve(self, canonical: str) -> dict[str, Any] | None:
        """The package resource a canonical (with or without |version) points to."""
        url, _, version = canonical.partition("|")
        r = self.by_url.get(url)
        if r is not None and version and r.get("version") != version:
            return None
        return r

    @property
    def key(self) -> str:
        """Cache key for the engine: changes whenever elm or value_sets is replaced (not edited in place)."""
        cached = self._key_cache
        if cached is not None and cached[0] is self.elm and cached[1] is self.value_sets:
            return cached[2]
        h = hashlib.sha256(json.dumps([self.elm, self.value_sets], sort_keys=True).encode())
        key = h.hexdigest()[:16]
        self._key_cache = (self.elm, self.value_sets, key)
        return key


# ---------------------------------------------------------------- helpers


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def expand_canonicals(node: Any, cfg: Config) -> Any:
    """Return a copy with every relative canonical ("Library/X") made absolute and versioned."""
    base, version = cfg.package.canonical, cfg.package.version

    def fix(value: Any) -> Any:
        if isinstance(value, str):
            m = _RELATIVE.match(value)
            if m:
                return f"{base}/{m.group(1)}/{m.group(2)}|{version}"
        return value

    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            if k in CANONICAL_KEYS:
                out[k] = [fix(x) for x in v] if isinstance(v, list) else fix(v)
                if isinstance(v, dict | list) and not isinstance(out[k], str):
                    out[k] = expand_canonicals(out[k], cfg)
            else:
                out[k] = expand_canonicals(v, cfg)
        return out
    if isinstance(node, list):
        return [expand_canonicals(x, cfg) for x in node]
    return node


def _list(value: Any) -> list[Any]:
    """A list element as a list: malformed sources (null, a string) must not crash the build;
    validate reports them with their location."""
    return value if isinstance(value, list) else []


def _contains(valueset: dict[str, Any]) -> list[dict[str, Any]]:
    expansion = valueset.get("expansion")
    items = expansion.get("contains") if isinstance(expansion, dict) else None
    return [c for c in _list(items) if isinstance(c, dict)]


def _esc(text: str) -> str:
    # Element text needs only &, < and > escaped; escaping quotes too would make servers that
    # re-serialise XHTML (HAPI does) hand back a different div than we sent.
    return html.escape(text, quote=False)


def _narrative(resource: dict[str, Any]) -> dict[str, str]:
    title = resource.get("title") or resource.get("name") or resource.get("id", "")
    parts = [f"<p><b>{_esc(str(title))}</b></p>"]
    rt = resource["resourceType"]
    meta = [rt]
    if resource.get("version"):
        meta.append(f"version {resource['version']}")
    if resource.get("status"):
        meta.append(f"status {resource['status']}")
    parts.append(f"<p>{_esc(', '.join(meta))}</p>")
    for key in ("description", "summary"):
        if isinstance(resource.get(key), str):
            parts.append(f"<p>{_esc(resource[key])}</p>")
    if rt == "ValueSet":
        codes = _contains(resource)
        items = "".join(
            f"<li>{_esc(str(c.get('system', '')))}|{_esc(str(c.get('code', '')))}"
            f" {_esc(str(c.get('display', '')))}</li>"
            for c in codes
        )
        if items:
            parts.append(f"<ul>{items}</ul>")
    return {
        "status": "generated",
        "div": '<div xmlns="http://www.w3.org/1999/xhtml">' + "".join(parts) + "</div>",
    }


def _stamp(resource: dict[str, Any], cfg: Config) -> dict[str, Any]:
    """Identity and release metadata, all from guideline.toml (never the wall clock)."""
    p = cfg.package
    rt, rid = resource["resourceType"], resource.get("id", "")
    out = dict(resource)
    if rt in CANONICAL_TYPES:
        out["url"] = cfg.canonical_for(rt, rid)
        out["version"] = p.version
        out["status"] = p.status
        out["experimental"] = p.experimental
        out["date"] = p.date
        out["publisher"] = p.publisher
        out.setdefault("contact", [{"telecom": [{"system": "url", "value": p.contact_url}]}])
        out.setdefault(
            "jurisdiction",
            [{"coding": [{"system": "http://unstats.un.org/unsd/methods/m49/m49.htm", "code": p.jurisdiction}]}],
        )
    return out


def _reorder(resource: dict[str, Any]) -> dict[str, Any]:
    """Put resourceType, id, meta, text, url, version first so bundles read naturally."""
    out = resource
    order = [
        "resourceType",
        "id",
        "meta",
        "text",
        "extension",
        "url",
        "identifier",
        "version",
        "name",
        "title",
        "type",
        "status",
        "experimental",
        "date",
        "publisher",
        "contact",
        "description",
        "jurisdiction",
    ]
    ordered = {k: out[k] for k in order if k in out}
    ordered.update({k: v for k, v in out.items() if k not in ordered})
    return ordered


# ---------------------------------------------------------------- ELM-derived Library content

_FHIR_NS = "{http://hl7.org/fhir}"
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


def _fhir_type(type_name: str | None) -> str:
    if not type_name:
        return "Any"
    local = type_name.split("}")[-1]
    if type_name.startswith(_FHIR_NS):
        return local
    return _SYSTEM_TYPES.get(local, "Any")


def _result_type(node: dict[str, Any]) -> tuple[str, str]:
    """(FHIR type, max) of an ELM def from its result type annotation."""
    if "resultTypeName" in node:
        return _fhir_type(node["resultTypeName"]), "1"
    spec = node.get("resultTypeSpecifier") or node.get("parameterTypeSpecifier") or {}
    if spec.get("type") == "ListTypeSpecifier":
        el = spec.get("elementType") or {}
        return _fhir_type(el.get("name")), "*"
    if spec.get("type") == "NamedTypeSpecifier":
        return _fhir_type(spec.get("name")), "1"
    return "Any", "1"


def _retrieves(node: Any, out: list[dict[str, Any]]) -> None:
    if isinstance(node, dict):
        if node.get("type") == "Retrieve":
            out.append(node)
        for v in node.values():
            _retrieves(v, out)
    elif isinstance(node, list):
        for v in node:
            _retrieves(v, out)


def _refs(node: Any, out: list[tuple[str | None, str]]) -> None:
    """(library alias or None, name) of every ExpressionRef and FunctionRef under `node`."""
    if isinstance(node, dict):
        if node.get("type") in ("ExpressionRef", "FunctionRef") and isinstance(node.get("name"), str):
            out.append((node.get("libraryName"), node["name"]))
        for v in node.values():
            _refs(v, out)
    elif isinstance(node, list):
        for v in node:
            _refs(v, out)


def used_statements(name: str, elms: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per library, the statements `name` can evaluate: all of its own, and of its includes only those reached.

    A definition of an included library that nothing here refers to (directly or through other definitions)
    is left out, so a recommendation's data requirements (its CDS prefetch) list only what its logic reads.
    """
    reached: dict[str, dict[str, list[dict[str, Any]]]] = {}
    todo: list[tuple[str, dict[str, Any]]] = [(name, st) for st in _statements(elms, name)]
    seen: set[tuple[str, str, int]] = set()
    while todo:
        lib, st = todo.pop()
        key = (lib, str(st.get("name")), id(st))
        if key in seen:
            continue
        seen.add(key)
        reached.setdefault(lib, {}).setdefault(str(st.get("name")), []).append(st)
        aliases = {d.get("localIdentifier", d["path"]): d["path"] for d in _include_defs(elms, lib)}
        found: list[tuple[str | None, str]] = []
        _refs(st, found)
        for alias, ref in found:
            target = lib if alias is None else aliases.get(alias)
            if target in elms and target != "FHIRHelpers":
                todo += [(target, d) for d in _statements(elms, target) if d.get("name") == ref]
    return {lib: [st for sts in by_name.values() for st in sts] for lib, by_name in reached.items()}


def _statements(elms: dict[str, dict[str, Any]], lib: str) -> list[dict[str, Any]]:
    return list(((elms[lib]["library"].get("statements") or {}).get("def")) or []) if lib in elms else []


def _include_defs(elms: dict[str, dict[str, Any]], lib: str) -> list[dict[str, Any]]:
    return list(((elms[lib]["library"].get("includes") or {}).get("def")) or [])


def data_requirements(
    names: list[str], elms: dict[str, dict[str, Any]], used: dict[str, list[dict[str, Any]]] | None = None
) -> list[dict[str, Any]]:
    """DataRequirements for every retrieve in the given libraries (HAPI builds prefetch from these).

    `used` (from used_statements) limits each library to the statements listed for it.
    """
    reqs: dict[str, dict[str, Any]] = {}
    for name in names:
        lib = elms[name]["library"]
        vsets = {d["name"]: d["id"] for d in (lib.get("valueSets") or {}).get("def", [])}
        csys = {d["name"]: d["id"] for d in (lib.get("codeSystems") or {}).get("def", [])}
        codes = {d["name"]: d for d in (lib.get("codes") or {}).get("def", [])}
        found: list[dict[str, Any]] = []
        _retrieves(lib.get("statements") if used is None else used.get(name, []), found)
        for r in found:
            dtype = r.get("dataType", "").split("}")[-1]
            req: dict[str, Any] = {"type": dtype}
            cf: dict[str, Any] = {}
            c = r.get("codes") or {}
            if c.get("type") == "ValueSetRef" and c.get("name") in vsets and not c.get("libraryName"):
                cf = {"path": r.get("codeProperty", "code"), "valueSet": vsets[c["name"]]}
            elif c.get("type") == "ValueSetRef" and c.get("libraryName") in elms:
                other = elms[c["libraryName"]]["library"]
                ovs = {d["name"]: d["id"] for d in (other.get("valueSets") or {}).get("def", [])}
                if c["name"] in ovs:
                    cf = {"path": r.get("codeProperty", "code"), "valueSet": ovs[c["name"]]}
            else:
                refs = c.get("element") if c.get("type") == "ToList" else None
                items = (
                    refs
                    if isinstance(refs, list)
                    else (
                        [c["operand"]]
                        if c.get("type") == "ToList" and isinstance(c.get("operand"), dict)
                        else [c]
                        if c.get("type") == "CodeRef"
                        else []
                    )
                )
                codings = []
                for it in items:
                    d = codes.get(it.get("name", "")) if it.get("type") == "CodeRef" else None
                    if d:
                        sysname = (d.get("codeSystem") or {}).get("name", "")
                        codings.append({"system": csys.get(sysname, sysname), "code": d["id"]})
                if codings:
                    cf = {"path": r.get("codeProperty", "code"), "code": codings}
            if cf:
                req["codeFilter"] = [cf]
            reqs[json.dumps(req, sort_keys=True)] = req
    return [reqs[k] for k in sorted(reqs)]


def _includes(elm: dict[str, Any]) -> list[tuple[str, str | None]]:
    defs = ((elm["library"].get("includes") or {}).get("def")) or []
    return [(d["path"], d.get("version")) for d in defs]


def _closure(name: str, elms: dict[str, dict[str, Any]]) -> list[str]:
    seen: list[str] = []
    stack = [name]
    while stack:
        n = stack.pop()
        if n in seen or n not in elms or n == "FHIRHelpers":
            continue
        seen.append(n)
        stack.extend(p for p, _ in _includes(elms[n]))
    return seen


def _library_parameters(lib: dict[str, Any]) -> list[dict[str, Any]]:
    """Library.parameter: the CQL parameters (in) and every define but Patient and functions (out)."""
    params: list[dict[str, Any]] = []
    for p in (lib.get("parameters") or {}).get("def", []):
        t, mx = _result_type(p)
        params.append({"name": p["name"], "use": "in", "min": 0, "max": mx, "type": t})
    for s in (lib.get("statements") or {}).get("def", []):
        if s.get("type") == "FunctionDef" or s.get("name") == "Patient":
            continue
        t, mx = _result_type(s)
        params.append({"name": s["name"], "use": "out", "min": 0, "max": mx, "type": t})
    return params


def _depends_on(elm: dict[str, Any], cfg: Config) -> list[dict[str, Any]]:
    """Library.relatedArtifact: the model info, included libraries, value sets and code systems it uses."""
    lib = elm["library"]
    related: list[dict[str, Any]] = [
        {
            "type": "depends-on",
            "display": "FHIR model information",
            "resource": f"{FHIR_MODELINFO_URL}|{cfg.fhir_version}",
        }
    ]
    for inc, ver in _includes(elm):
        url = FHIRHELPERS_URL if inc == "FHIRHelpers" else cfg.canonical_for("Library", inc)
        related.append({"type": "depends-on", "display": f"Library {inc}", "resource": f"{url}|{ver}" if ver else url})
    for vs in (lib.get("valueSets") or {}).get("def", []):
        related.append(
            {
                "type": "depends-on",
                "display": f"Value set {vs['name']}",
                "resource": vs["id"] + (f"|{vs['version']}" if vs.get("version") else ""),
            }
        )
    for cs in (lib.get("codeSystems") or {}).get("def", []):
        related.append({"type": "depends-on", "display": f"Code system {cs['name']}", "resource": cs["id"]})
    return related


def _options_parameters(cfg: Config, translator: dict[str, str]) -> dict[str, Any]:
    """The contained Parameters the cqf-cqlOptions extension points to: translator version and options."""
    options = cfg.cql_options
    return {
        "resourceType": "Parameters",
        "id": "options",
        "parameter": [
            {"name": "translatorVersion", "valueString": translator.get("translator", "")},
            *[{"name": "option", "valueString": o} for o in options.get("options", [])],
            {"name": "signatureLevel", "valueString": options.get("signatureLevel", "")},
            {"name": "compatibilityLevel", "valueString": options.get("compatibilityLevel", "")},
        ],
    }


def library_content(
    name: str,
    cql_text: str,
    elm: dict[str, Any],
    elms: dict[str, dict[str, Any]],
    cfg: Config,
    translator: dict[str, str],
) -> dict[str, Any]:
    """The generated parts of a Library: content, parameters, depends-on, data requirements."""
    elm_bytes = json.dumps(elm, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return {
        "contained": [_options_parameters(cfg, translator)],
        "extension_cqlOptions": {"url": CQL_OPTIONS_EXT, "valueReference": {"reference": "#options"}},
        "type": {"coding": [{"system": LIBRARY_TYPE_SYSTEM, "code": "logic-library"}]},
        "parameter": _library_parameters(elm["library"]),
        "relatedArtifact": _depends_on(elm, cfg),
        "dataRequirement": data_requirements(_closure(name, elms), elms, used_statements(name, elms)),
        "content": [
            {"contentType": "text/cql", "data": _b64(cql_text.encode("utf-8"))},
            {"contentType": "application/elm+json", "data": _b64(elm_bytes)},
        ],
    }


# ---------------------------------------------------------------- build


_HELPERS_ELM: dict[str, CompileResult] = {}


def compile_all(sources: Sources, cfg: Config, engine: Engine) -> tuple[dict[str, dict[str, Any]], list[Finding]]:
    """Compile every project library (and FHIRHelpers); every error is a located finding."""
    texts = {n: s.text for n, s in sources.cql.items()}
    elms: dict[str, dict[str, Any]] = {}
    findings: list[Finding] = []
    # FHIRHelpers never changes (its text is digest-checked), but compiling it as a target costs
    # ~1 s: compile it once per translator options. Its compile uses the same library set as the
    # project compiles below, so the worker keeps one LibraryManager instead of rebuilding two.
    opts_key = json.dumps(cfg.cql_options, sort_keys=True)
    helpers = _HELPERS_ELM.get(opts_key) or engine.compile("FHIRHelpers", texts, cfg.cql_options)
    if helpers.ok:
        _HELPERS_ELM[opts_key] = helpers
    if not helpers.ok or helpers.elm is None:
        findings.append(
            Finding(
                "error",
                "FHIRHelpers-4.0.1.cql",
                "",
                "FHIRHelpers did not compile: " + "; ".join(m.message for m in helpers.errors),
                "cql",
            )
        )
    else:
        elms["FHIRHelpers"] = helpers.elm
    for name, src in sorted(sources.cql.items()):
        res = engine.compile(name, texts, cfg.cql_options)
        shown = rel(cfg.root, src.path)
        for m in res.messages:
            if m.library not in (name, "FHIRHelpers") and m.library in sources.cql:
                # Reported when compiling the including library; the included one reports it too.
                continue
            if m.severity == "error" or m.severity == "warning":
                findings.append(
                    Finding(m.severity, shown, m.location, f"{m.message} (library {name}; translator)", "cql")
                )
        if res.ok and res.elm is not None:
            elms[name] = res.elm
    return elms, findings


def _value_sets(resources: list[dict[str, Any]]) -> dict[str, dict[str, list[dict[str, str]]]]:
    out: dict[str, dict[str, list[dict[str, str]]]] = {}
    for r in resources:
        if r.get("resourceType") != "ValueSet" or "url" not in r:
            continue
        codes = [{"system": c["system"], "code": c["code"]} for c in _contains(r) if "system" in c and "code" in c]
        out[r["url"]] = {r.get("version", ""): codes}
    return out


def fhirhelpers_library(elm: dict[str, Any], translator: dict[str, str]) -> dict[str, Any]:
    """The FHIRHelpers Library resource: the toolchain's CQL text and its ELM, as the engine needs them."""
    text = toolchain.fhirhelpers_text()
    elm_bytes = json.dumps(elm, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return {
        "resourceType": "Library",
        "id": "FHIRHelpers",
        "url": FHIRHELPERS_URL,
        "version": "4.0.1",
        "name": "FHIRHelpers",
        "title": "FHIR Helpers",
        "status": "active",
        "experimental": False,
        "type": {"coding": [{"system": LIBRARY_TYPE_SYSTEM, "code": "logic-library"}]},
        "publisher": "HL7 International / Clinical Quality Information (from the cqframework 'quick' artifact)",
        "description": "Conversion functions between FHIR 4.0.1 types and CQL system types, as published "
        f"by cqframework; ELM compiled by translator {translator.get('translator', '')}.",
        "relatedArtifact": [
            {
                "type": "depends-on",
                "display": "FHIR model information",
                "resource": f"{FHIR_MODELINFO_URL}|4.0.1",
            }
        ],
        "content": [
            {"contentType": "text/cql", "data": _b64(text.encode("utf-8"))},
            {"contentType": "application/elm+json", "data": _b64(elm_bytes)},
        ],
    }


def _with_generated_content(res: dict[str, Any], gen: dict[str, Any]) -> None:
    """Put a Library's generated parts (see `library_content`) into the source resource, in place."""
    res["content"] = gen["content"]
    res["contained"] = [*_list(res.get("contained")), *gen["contained"]]
    res["extension"] = [*_list(res.get("extension")), gen["extension_cqlOptions"]]
    res.setdefault("type", gen["type"])
    res["parameter"] = gen["parameter"]
    res["relatedArtifact"] = [*_list(res.get("relatedArtifact")), *gen["relatedArtifact"]]
    res["dataRequirement"] = gen["dataRequirement"]


def _add_resource(pkg: Package, sources: Sources, path: Path, data: dict[str, Any]) -> None:
    """Generate, stamp and add one source resource; a problem with it becomes a finding instead."""
    cfg, elms = pkg.config, pkg.elm
    rt, rid = data.get("resourceType"), data.get("id")
    shown = rel(cfg.root, path)
    if not isinstance(rid, str):
        pkg.findings.append(
            Finding("error", shown, "id", "resource has no string 'id'; give it a stable id", "references")
        )
        return
    res = copy.deepcopy(data)
    if rt == "Library" and rid in sources.cql and rid in elms:
        if "content" in res:
            message = (
                f"hand-written content is ignored: build generates it from cql/{rid}.cql; delete it from the source"
            )
            pkg.findings.append(Finding("warning", shown, "content", message, "conventions"))
        _with_generated_content(res, library_content(rid, sources.cql[rid].text, elms[rid], elms, cfg, pkg.translator))
    res = _stamp(expand_canonicals(res, cfg), cfg)
    res["text"] = _narrative(res)
    res = _reorder(res)
    key = f"{rt}/{rid}"
    if key in pkg.source_of:
        message = f"duplicate resource {key}: also in {rel(cfg.root, pkg.source_of[key])}; ids must be unique per type"
        pkg.findings.append(Finding("error", shown, "id", message, "references"))
        return
    pkg.source_of[key] = path
    pkg.resources.append(res)


def build_package(cfg: Config | None = None, engine: Engine | None = None, *, strict: bool = True) -> Package:
    """Compile and assemble the package in memory. With `strict`, errors raise ContentError."""
    cfg = cfg or load_config()
    eng = engine or shared_engine()
    sources = load_sources(cfg)
    pkg = Package(config=cfg, findings=list(sources.findings))
    pkg.translator = eng.versions()
    elms, cql_findings = compile_all(sources, cfg, eng)
    pkg.findings.extend(cql_findings)
    pkg.elm = elms
    for path, data in sources.resources:
        _add_resource(pkg, sources, path, data)
    if "FHIRHelpers" in elms:
        fh = fhirhelpers_library(elms["FHIRHelpers"], pkg.translator)
        fh["text"] = _narrative(fh)
        pkg.resources.append(_reorder(fh))
        pkg.source_of["Library/FHIRHelpers"] = toolchain.fhirhelpers_path()
    pkg.resources.sort(key=lambda r: (_TYPE_ORDER.get(r["resourceType"], 99), r["resourceType"], r["id"]))
    pkg.value_sets = _value_sets(pkg.resources)
    errors = [f for f in pkg.findings if f.severity == "error"]
    if strict and errors:
        raise ContentError(f"build failed with {len(errors)} error(s)", errors)
    return pkg
