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
from guideline.core import elm, toolchain
from guideline.core.config import Config, load_config
from guideline.core.errors import ContentError, Finding
from guideline.core.fhir import (
    CQL_OPTIONS_EXT,
    FHIR_MODELINFO_URL,
    FHIRHELPERS_URL,
    LIBRARY_TYPE_SYSTEM,
    primary_library,
)

# Resource types whose instances are canonical knowledge artifacts stamped from guideline.toml.
CANONICAL_TYPES = (
    "Library",
    "PlanDefinition",
    "ActivityDefinition",
    "Measure",
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
    for i, t in enumerate(
        ["CodeSystem", "ValueSet", "Citation", "Library", "ActivityDefinition", "PlanDefinition", "Measure"]
    )
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

    def primary_library_name(self, plan: dict[str, Any]) -> str | None:
        """The name of a plan's compiled primary library, or None (no single primary library, not compiled)."""
        canonical = primary_library(plan)
        lib = self.resolve(canonical) if canonical is not None else None
        name = lib.get("name") if lib is not None else None
        return name if isinstance(name, str) and name in self.elm else None

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


def stamp(resource: dict[str, Any], cfg: Config) -> dict[str, Any]:
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


def _library_parameters(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Library.parameter: the CQL parameters (in) and every define but Patient and functions (out)."""
    params: list[dict[str, Any]] = []
    for p in elm.defs(doc, "parameters"):
        t, mx = elm.result_type(p)
        params.append({"name": p["name"], "use": "in", "min": 0, "max": mx, "type": t})
    for s in elm.statements(doc):
        if s.get("type") == "FunctionDef" or s.get("name") == "Patient":
            continue
        t, mx = elm.result_type(s)
        params.append({"name": s["name"], "use": "out", "min": 0, "max": mx, "type": t})
    return params


def _depends_on(doc: dict[str, Any], cfg: Config) -> list[dict[str, Any]]:
    """Library.relatedArtifact: the model info, included libraries, value sets and code systems it uses."""
    related: list[dict[str, Any]] = [
        {
            "type": "depends-on",
            "display": "FHIR model information",
            "resource": f"{FHIR_MODELINFO_URL}|{cfg.fhir_version}",
        }
    ]
    for inc, ver in elm.includes(doc):
        url = FHIRHELPERS_URL if inc == elm.FHIRHELPERS else cfg.canonical_for("Library", inc)
        related.append({"type": "depends-on", "display": f"Library {inc}", "resource": f"{url}|{ver}" if ver else url})
    for vs in elm.defs(doc, "valueSets"):
        related.append(
            {
                "type": "depends-on",
                "display": f"Value set {vs['name']}",
                "resource": vs["id"] + (f"|{vs['version']}" if vs.get("version") else ""),
            }
        )
    for cs in elm.defs(doc, "codeSystems"):
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
    doc: dict[str, Any],
    elms: dict[str, dict[str, Any]],
    cfg: Config,
    translator: dict[str, str],
) -> dict[str, Any]:
    """The generated parts of a Library from its ELM `doc`: content, parameters, depends-on, data requirements."""
    elm_bytes = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return {
        "contained": [_options_parameters(cfg, translator)],
        "extension_cqlOptions": {"url": CQL_OPTIONS_EXT, "valueReference": {"reference": "#options"}},
        "type": {"coding": [{"system": LIBRARY_TYPE_SYSTEM, "code": "logic-library"}]},
        "parameter": _library_parameters(doc),
        "relatedArtifact": _depends_on(doc, cfg),
        "dataRequirement": elm.data_requirements(
            elm.include_closure(name, elms), elms, elm.used_statements(name, elms)
        ),
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


def fhirhelpers_library(doc: dict[str, Any], translator: dict[str, str]) -> dict[str, Any]:
    """The FHIRHelpers Library resource: the toolchain's CQL text and its ELM `doc`, as the engine needs them."""
    text = toolchain.fhirhelpers_text()
    elm_bytes = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")
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
    res = stamp(expand_canonicals(res, cfg), cfg)
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
