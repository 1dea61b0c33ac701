"""Package-level checks: references, CQL wiring, terminology and CPG/CRMI conventions (layers 4-7)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from guideline.core.errors import Finding
from guideline.validation.schema import PathPart, fhirpath

REFERENCES = "references"
CQL = "cql"
TERMINOLOGY = "terminology"
CONVENTIONS = "conventions"

FHIRHELPERS_URL = "http://hl7.org/fhir/Library/FHIRHelpers"
FHIR_MODELINFO_URL = "http://fhir.org/guides/cqf/common/Library/FHIR-ModelInfo"
KNOWLEDGE_CAPABILITY = "http://hl7.org/fhir/StructureDefinition/cqf-knowledgeCapability"
STRENGTH = "http://hl7.org/fhir/StructureDefinition/cqf-strengthOfRecommendation"
QUALITY = "http://hl7.org/fhir/StructureDefinition/cqf-qualityOfEvidence"
STRENGTH_CS = "http://terminology.hl7.org/CodeSystem/recommendation-strength"
QUALITY_CS = "http://terminology.hl7.org/CodeSystem/evidence-quality"
PLAN_TYPE_CS = "http://terminology.hl7.org/CodeSystem/plan-definition-type"
ELM_BOOLEAN = "{urn:hl7-org:elm-types:r1}Boolean"
CQL_IDENTIFIER_LANGUAGES = frozenset({"text/cql-identifier", "text/cql.identifier"})

# Canonicals that legitimately live outside the package: url -> the only version we accept.
KNOWN_EXTERNAL: dict[str, str] = {FHIRHELPERS_URL: "4.0.1", FHIR_MODELINFO_URL: "4.0.1"}
# Namespaces of HL7 specifications and terminology: profiles, extensions, code systems and
# value sets there are published by HL7, not by this package.
KNOWN_EXTERNAL_PREFIXES = (
    "http://hl7.org/fhir/StructureDefinition/",
    "http://hl7.org/fhir/ValueSet/",
    "http://hl7.org/fhir/CodeSystem/",
    "http://hl7.org/fhir/uv/cpg/",
    "http://hl7.org/fhir/uv/crmi/",
    "http://terminology.hl7.org/CodeSystem/",
    "http://terminology.hl7.org/ValueSet/",
)
# Canonical code system URIs (terminology.hl7.org) -> name, for messages.
CODE_SYSTEMS: dict[str, str] = {
    "http://snomed.info/sct": "SNOMED CT",
    "http://loinc.org": "LOINC",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "http://hl7.org/fhir/sid/icd-10": "ICD-10",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
    "http://id.who.int/icd/release/11/mms": "ICD-11 MMS",
    "http://www.whocc.no/atc": "ATC",
    "http://fdasis.nlm.nih.gov": "UNII",
    "http://unitsofmeasure.org": "UCUM",
    "http://www.orpha.net": "Orphanet",
    "https://omim.org": "OMIM",
    "http://purl.obolibrary.org/obo/mondo.owl": "MONDO",
    "http://purl.obolibrary.org/obo/hp.owl": "HPO",
    "http://hl7.org/fhir/sid/ndc": "NDC",
}
# Spellings people use instead of the canonical URI (compared after _normalise_system).
_ALIASES: dict[str, str] = {
    **{
        a: "http://snomed.info/sct"
        for a in (
            "snomed",
            "snomedct",
            "snomed-ct",
            "snomed ct",
            "sct",
            "snomed.info/sct",
            "snomed.info",
            "snomed.org",
            "urn:oid:2.16.840.1.113883.6.96",
            "2.16.840.1.113883.6.96",
        )
    },
    **{a: "http://loinc.org" for a in ("loinc", "loinc.org", "urn:oid:2.16.840.1.113883.6.1")},
    **{
        a: "http://www.nlm.nih.gov/research/umls/rxnorm"
        for a in ("rxnorm", "nlm.nih.gov/research/umls/rxnorm", "urn:oid:2.16.840.1.113883.6.88")
    },
    **{
        a: "http://hl7.org/fhir/sid/icd-10"
        for a in ("icd-10", "icd10", "icd 10", "hl7.org/fhir/sid/icd-10", "urn:oid:2.16.840.1.113883.6.3")
    },
    **{
        a: "http://hl7.org/fhir/sid/icd-10-cm"
        for a in ("icd-10-cm", "icd10cm", "hl7.org/fhir/sid/icd-10-cm", "urn:oid:2.16.840.1.113883.6.90")
    },
    **{a: "http://www.whocc.no/atc" for a in ("atc", "whocc.no/atc", "urn:oid:2.16.840.1.113883.6.73")},
    **{a: "http://unitsofmeasure.org" for a in ("ucum", "unitsofmeasure.org", "urn:oid:2.16.840.1.113883.6.8")},
}
# Systems whose codes are HL7 infrastructure (status, types, jurisdictions, units), not clinical
# content: they need a canonical URI but are not expected in the package's value sets.
_INFRASTRUCTURE_PREFIXES = (
    "http://terminology.hl7.org/",
    "http://hl7.org/fhir/",
    "http://unstats.un.org/",
    "urn:iso:std:iso:",
    "urn:ietf:bcp:",
    "http://unitsofmeasure.org",
)
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_NAME = re.compile(r"^[A-Z][A-Za-z0-9_]{0,254}$")
_LOCATOR = re.compile(r"^(\d+):(\d+)")
KNOWLEDGE_TYPES = (
    "Library",
    "PlanDefinition",
    "ActivityDefinition",
    "ValueSet",
    "CodeSystem",
    "Questionnaire",
    "Measure",
    "StructureDefinition",
)
REQUIRED_METADATA = ("url", "version", "name", "title", "status", "experimental", "description", "publisher")
CAPABILITIES = frozenset({"shareable", "computable", "publishable", "executable"})
CDS_PRIORITIES = frozenset({"routine", "urgent", "stat"})


@dataclass
class Item:
    """One resource under validation, with where its findings point."""

    resource: dict[str, Any]
    file: str
    prefix: str  # location prefix: "PlanDefinition" or "Bundle.entry[3].resource"
    external: bool = False  # published elsewhere (FHIRHelpers): not judged by project conventions

    @property
    def rtype(self) -> str:
        rt = self.resource.get("resourceType")
        return rt if isinstance(rt, str) else ""

    @property
    def rid(self) -> str:
        rid = self.resource.get("id")
        return rid if isinstance(rid, str) else ""

    @property
    def key(self) -> str:
        return f"{self.rtype}/{self.rid}"

    def str_field(self, name: str) -> str | None:
        v = self.resource.get(name)
        return v if isinstance(v, str) else None

    def at(self, *parts: PathPart) -> str:
        return fhirpath(self.prefix, parts)


@dataclass
class CqlLib:
    """A CQL library of the package: its ELM and where its line:col positions point."""

    name: str
    version: str | None
    elm: dict[str, Any] | None
    text: str | None
    file: str
    pos_prefix: str = ""  # "" when `file` is the .cql itself; "Library/X CQL " inside a bundle
    item: Item | None = None

    def loc(self, node: Any) -> str:
        """line:col of an ELM node (its locator), or of the library header."""
        locator = node.get("locator") if isinstance(node, dict) else None
        m = _LOCATOR.match(locator) if isinstance(locator, str) else None
        return f"{self.pos_prefix}{m.group(1)}:{m.group(2)}" if m else f"{self.pos_prefix}1:1"

    def header_loc(self) -> str:
        m = re.search(r"^\s*library\b", self.text or "", re.MULTILINE)
        if not m or self.text is None:
            return f"{self.pos_prefix}1:1"
        start = m.end() - len("library")
        line = self.text.count("\n", 0, start) + 1
        col = start - (self.text.rfind("\n", 0, start) + 1) + 1
        return f"{self.pos_prefix}{line}:{col}"

    def defs(self, section: str) -> list[dict[str, Any]]:
        lib = (self.elm or {}).get("library") or {}
        sec = lib.get(section) if isinstance(lib, dict) else None
        items = sec.get("def") if isinstance(sec, dict) else None
        return [d for d in items if isinstance(d, dict)] if isinstance(items, list) else []


@dataclass
class Subject:
    """Everything validated together: the package's resources and CQL libraries."""

    items: list[Item]
    libs: dict[str, CqlLib] = field(default_factory=dict)  # by CQL library name
    canonical_base: str | None = None  # the package's own namespace, e.g. http://example.org/fhir/x
    # Where to tell users to put a missing CQL file / resource (source layout), if known.
    cql_hint: str = "cql/{name}.cql"
    # CQL library names whose compile failed (already reported): do not pile on.
    failed_cql: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.by_url: dict[str, list[Item]] = {}
        for it in self.items:
            url = it.str_field("url")
            if url:
                self.by_url.setdefault(url, []).append(it)
        self.lib_of_item: dict[int, CqlLib] = {id(lib.item): lib for lib in self.libs.values() if lib.item}

    def resolve(self, canonical: str) -> list[Item]:
        """Package resources with this url (any version)."""
        return self.by_url.get(canonical.partition("|")[0], [])

    def own(self, url: str) -> bool:
        return bool(self.canonical_base) and url.startswith(f"{self.canonical_base}/")


def _codings(node: Any, path: list[PathPart]) -> Iterator[tuple[list[PathPart], dict[str, Any]]]:
    """Every Coding-shaped object (system + code) under node, with its path."""
    if isinstance(node, dict):
        if isinstance(node.get("code"), str) and "system" in node:
            yield path, node
        for k, v in node.items():
            if k not in ("text", "contained"):
                yield from _codings(v, [*path, k])
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _codings(v, [*path, i])


def _walk(node: Any, path: list[PathPart]) -> Iterator[tuple[list[PathPart], Any, Any]]:
    """(path, key, value) for every object member under node."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield [*path, k], k, v
            yield from _walk(v, [*path, k])
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, [*path, i])


def _list(node: Any, key: str) -> list[Any]:
    """node[key] when it is a JSON array, else [] (malformed input is the schema layer's to report)."""
    value = node.get(key) if isinstance(node, dict) else None
    return value if isinstance(value, list) else []


def _close(name: str, options: list[str]) -> str:
    m = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return f' (did you mean "{m[0]}"?)' if m else ""


# ---------------------------------------------------------------- layer 4: references

# element name -> resource types a canonical there may point to (None: any)
_CANONICAL_ELEMENTS: dict[str, tuple[str, ...] | None] = {
    "library": ("Library",),
    "definitionCanonical": ("ActivityDefinition", "PlanDefinition", "Questionnaire"),
    "valueSet": ("ValueSet",),
    "answerValueSet": ("ValueSet",),
    "instantiatesCanonical": None,
    "derivedFrom": None,
    "profile": ("StructureDefinition",),
    "targetProfile": ("StructureDefinition",),
}


def _canonicals(item: Item) -> Iterator[tuple[list[PathPart], str, tuple[str, ...] | None]]:
    for path, key, value in _walk(item.resource, []):
        if "text" in path[:1] or "contained" in path[:1]:
            continue
        if key in _CANONICAL_ELEMENTS:
            allowed = _CANONICAL_ELEMENTS[key]
            values = value if isinstance(value, list) else [value]
            for i, v in enumerate(values):
                if isinstance(v, str):
                    yield ([*path, i] if isinstance(value, list) else path), v, allowed
        elif key == "resource" and isinstance(value, str):
            # RelatedArtifact.resource (documentation, depends-on, citations)
            yield path, value, None


def references(s: Subject) -> list[Finding]:
    out: list[Finding] = []
    # Value sets named by CQL are reported once, at the CQL declaration (layer 5); code systems
    # named by CQL (Library depends-on) are judged by the terminology layer (layer 6).
    cql_value_sets = {d.get("id") for lib in s.libs.values() for d in lib.defs("valueSets")}
    cql_systems = {d.get("id") for lib in s.libs.values() for d in lib.defs("codeSystems")}
    seen_keys: dict[str, Item] = {}
    seen_urls: dict[str, Item] = {}
    for it in s.items:
        if it.rid:
            other = seen_keys.get(it.key)
            if other is not None:
                out.append(
                    Finding(
                        "error",
                        it.file,
                        it.at("id"),
                        f"duplicate resource {it.key}: also in {other.file}; ids must be unique per type",
                        REFERENCES,
                    )
                )
            else:
                seen_keys[it.key] = it
        url = it.str_field("url")
        if url is not None:
            uv = f"{url}|{it.str_field('version') or ''}"
            other = seen_urls.get(uv)
            if other is not None and other.key != it.key:
                out.append(
                    Finding(
                        "error",
                        it.file,
                        it.at("url"),
                        f"duplicate canonical {url} (version {it.str_field('version')}): also used by "
                        f"{other.key} in {other.file}; every artifact needs its own url",
                        REFERENCES,
                    )
                )
            seen_urls.setdefault(uv, it)
            if not it.external and it.rtype and it.rid and not url.endswith(f"/{it.rtype}/{it.rid}"):
                out.append(
                    Finding(
                        "error",
                        it.file,
                        it.at("url"),
                        f"url '{url}' must end in /{it.rtype}/{it.rid} (CRMI artifact convention); "
                        f"use {{base}}/{it.rtype}/{it.rid}",
                        REFERENCES,
                    )
                )
        for path, value, allowed in _canonicals(it):
            if (value in cql_value_sets and not s.resolve(value)) or value.partition("|")[0] in cql_systems:
                continue
            if value.startswith("#"):
                # a contained resource (HAPI $apply accepts "#id" for definitionCanonical)
                contained = {c.get("id") for c in _list(it.resource, "contained") if isinstance(c, dict)}
                msg = None if value[1:] in contained else f"'{value}' names no contained resource; add it to contained"
            else:
                msg = _canonical_problem(s, value, allowed)
            if msg:
                out.append(Finding("error", it.file, it.at(*path), msg, REFERENCES))
    return out


def _canonical_problem(s: Subject, value: str, allowed: tuple[str, ...] | None) -> str | None:
    url, _, version = value.partition("|")
    if not _URI_SCHEME.match(url):
        return (
            f"'{value}' is not an absolute canonical URL; write {{base}}/{url} (sources may use "
            "the relative 'Type/id' form only for resources in fhir_resources/, which build expands)"
        )
    targets = s.resolve(url)
    if targets:
        types = {t.rtype for t in targets}
        if allowed and not types & set(allowed):
            return (
                f"'{value}' points to {targets[0].key}, but only {' / '.join(allowed)} resources may be "
                "referenced here; fix the reference"
            )
        versions = sorted({t.str_field("version") or "" for t in targets})
        if version and version not in versions:
            return (
                f"'{value}' asks for version {version}, but the package has {targets[0].key} version "
                f"{', '.join(versions)}; reference |{versions[0]} (or bump the target's version)"
            )
        return None
    if url in KNOWN_EXTERNAL:
        want = KNOWN_EXTERNAL[url]
        if version and version != want:
            return f"'{value}': only version {want} of {url} is supported; use {url}|{want}"
        return None
    if url.startswith(KNOWN_EXTERNAL_PREFIXES) or url in CODE_SYSTEMS:
        return None
    tail = url.rstrip("/").rsplit("/", 2)
    if s.own(url) and len(tail) == 3:
        rtype, rid = tail[1], tail[2]
        return (
            f"'{value}' does not resolve: the package has no {rtype}/{rid}; add "
            f"fhir_resources/{rtype.lower()}/{rtype.lower()}-{rid}.json or fix the reference"
        )
    return (
        f"'{value}' does not resolve: it is neither in the package nor a known external canonical "
        "(FHIRHelpers, FHIR-ModelInfo, HL7 specifications and terminology); add the artifact to the package"
    )


# ---------------------------------------------------------------- layer 5: CQL


def _type_name(node: dict[str, Any]) -> str:
    if isinstance(node.get("resultTypeName"), str):
        return (
            str(node["resultTypeName"])
            .replace("{urn:hl7-org:elm-types:r1}", "System.")
            .replace("{http://hl7.org/fhir}", "FHIR.")
        )
    spec = node.get("resultTypeSpecifier")
    if isinstance(spec, dict):
        if spec.get("type") == "ListTypeSpecifier":
            inner = spec.get("elementType")
            inner = inner if isinstance(inner, dict) else {}
            return f"List<{_type_name({'resultTypeName': inner.get('name')}) if inner.get('name') else '...'}>"
        return str(spec.get("type", "unknown type")).removesuffix("TypeSpecifier")
    return "an unknown type"


def cql(s: Subject) -> list[Finding]:
    out: list[Finding] = []
    by_name = {lib.item.str_field("name"): lib.item for lib in s.libs.values() if lib.item}
    library_items = [it for it in s.items if it.rtype == "Library"]
    for it in library_items:
        lib = s.lib_of_item.get(id(it))
        if lib is None and not it.external:
            name = it.str_field("name") or it.rid
            if name in s.failed_cql or it.rid in s.failed_cql:
                continue
            has_content = any(
                isinstance(c, dict) and c.get("contentType") == "text/cql"
                for c in it.resource.get("content") or []
                if isinstance(it.resource.get("content"), list)
            )
            if not has_content:
                out.append(
                    Finding(
                        "error",
                        it.file,
                        it.at("content"),
                        f"Library {it.rid} has no CQL: add {s.cql_hint.format(name=it.rid)} starting "
                        f"`library {it.rid} version '{it.str_field('version') or '1.0.0'}'` "
                        "(build generates content from it)",
                        CQL,
                    )
                )
            continue
        if lib is None or lib.name == "FHIRHelpers":
            continue
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
    for it in s.items:
        if it.rtype in ("PlanDefinition", "ActivityDefinition"):
            out.extend(_expressions(s, it))
    return out


def _primary_library(s: Subject, it: Item) -> tuple[CqlLib | None, str | None]:
    """(the primary Library's CQL, or None; why not, when it matters)."""
    libs = it.resource.get("library")
    first = libs[0] if isinstance(libs, list) and libs else None
    if not isinstance(first, str):
        return None, (
            f"{it.rtype} {it.rid} uses CQL identifiers but has no library; add library: "
            f'["Library/<name>"] naming the Library that defines them'
        )
    targets = [t for t in s.resolve(first) if t.rtype == "Library"]
    if not targets:
        return None, None  # reported by the references layer
    lib = s.lib_of_item.get(id(targets[0]))
    return lib, None


def _expressions(s: Subject, it: Item) -> list[Finding]:
    out: list[Finding] = []
    exprs: list[tuple[list[PathPart], str, dict[str, Any], str | None]] = []

    def collect(actions: Any, base: list[PathPart]) -> None:
        for i, a in enumerate(actions if isinstance(actions, list) else []):
            if not isinstance(a, dict):
                continue
            for j, c in enumerate(_list(a, "condition")):
                if isinstance(c, dict) and isinstance(c.get("expression"), dict):
                    kind = c.get("kind") if isinstance(c.get("kind"), str) else None
                    exprs.append(([*base, i, "condition", j, "expression"], "condition", c["expression"], kind))
            for j, d in enumerate(_list(a, "dynamicValue")):
                if isinstance(d, dict) and isinstance(d.get("expression"), dict):
                    exprs.append(([*base, i, "dynamicValue", j, "expression"], "dynamicValue", d["expression"], None))
            collect(a.get("action"), [*base, i, "action"])

    if it.rtype == "PlanDefinition":
        collect(it.resource.get("action"), ["action"])
    else:
        dvs = it.resource.get("dynamicValue")
        for j, d in enumerate(dvs if isinstance(dvs, list) else []):
            if isinstance(d, dict) and isinstance(d.get("expression"), dict):
                exprs.append((["dynamicValue", j, "expression"], "dynamicValue", d["expression"], None))
    named = [e for e in exprs if isinstance(e[2].get("language"), str) and e[2]["language"] in CQL_IDENTIFIER_LANGUAGES]
    if not named:
        return out
    lib, why = _primary_library(s, it)
    if why:
        out.append(Finding("error", it.file, it.at("library"), why, CQL))
    if lib is None or lib.elm is None:
        return out
    statements = {d.get("name"): d for d in lib.defs("statements") if isinstance(d.get("name"), str)}
    where = lib.file if not lib.pos_prefix else f"Library/{lib.item.rid if lib.item else lib.name}"
    for path, role, expr, kind in named:
        name = expr.get("expression")
        if not isinstance(name, str) or not name.strip():
            out.append(
                Finding(
                    "error",
                    it.file,
                    it.at(*path),
                    "empty CQL identifier: name a define of the primary library",
                    CQL,
                )
            )
            continue
        d = statements.get(name)
        if d is None:
            options = [str(n) for n in statements if n != "Patient"]
            out.append(
                Finding(
                    "error",
                    it.file,
                    it.at(*path),
                    f'{role} names define "{name}", which library {lib.name} ({where}) does not '
                    f'define{_close(name, options)}; add `define "{name}":` to the CQL or fix the name',
                    CQL,
                )
            )
            continue
        if d.get("type") == "FunctionDef" or d.get("operand"):
            out.append(
                Finding(
                    "error",
                    it.file,
                    it.at(*path),
                    f'"{name}" in {lib.name} is a function; a {role} must name a define '
                    "(an expression without arguments)",
                    CQL,
                )
            )
            continue
        if role == "condition" and kind in ("applicability", "start", "stop", None):
            tname = d.get("resultTypeName")
            if tname is None and d.get("resultTypeSpecifier") is None:
                out.append(
                    Finding(
                        "warning",
                        lib.file,
                        lib.loc(d),
                        f'define "{name}" has no result type in the ELM; compile with '
                        "EnableResultTypes so its Boolean type can be checked",
                        CQL,
                    )
                )
            elif tname != ELM_BOOLEAN:
                out.append(
                    Finding(
                        "error",
                        it.file,
                        it.at(*path),
                        f'{kind or "condition"} condition "{name}" returns {_type_name(d)}, not Boolean; '
                        f'name a Boolean define (e.g. define "{name} Exists": exists "{name}")',
                        CQL,
                    )
                )
    return out


# ---------------------------------------------------------------- layer 6: terminology


def _normalise_system(system: str) -> str:
    n = system.strip().lower()
    for p in ("https://", "http://"):
        n = n.removeprefix(p)
    return n.removeprefix("www.").rstrip("/")


def system_problem(system: Any) -> tuple[str, str] | None:
    """(severity, message) when `system` is not a canonical code system URI."""
    if not isinstance(system, str) or not system:
        return "error", "coding has no system; add the canonical code system URI"
    if system in CODE_SYSTEMS:
        return None
    alias = _ALIASES.get(_normalise_system(system))
    if alias:
        return "error", (f"system '{system}' is not the canonical URI of {CODE_SYSTEMS[alias]}; use '{alias}' exactly")
    if not _URI_SCHEME.match(system):
        return "error", (
            f"system '{system}' is not a URI; use the canonical code system URI "
            "(see terminology.hl7.org, e.g. http://snomed.info/sct)"
        )
    if system.startswith("urn:oid:"):
        return "warning", (
            f"system '{system}' is an OID; use the code system's canonical URI if terminology.hl7.org lists one"
        )
    if system.endswith("/") and system.startswith(("http://", "https://")):
        return "warning", f"system '{system}' ends with '/'; canonical URIs have no trailing slash"
    return None


def _same_display(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def terminology(s: Subject) -> list[Finding]:
    out: list[Finding] = []
    known: dict[tuple[str, str], tuple[str | None, str]] = {}  # (system, code) -> (display, where)

    def learn(system: Any, code: Any, display: Any, where: str, it: Item, path: list[PathPart]) -> None:
        if not isinstance(system, str) or not isinstance(code, str):
            return
        disp = display if isinstance(display, str) else None
        prev = known.get((system, code))
        if prev is None or prev[0] is None:
            known[(system, code)] = (disp, where)
        elif disp is not None and not _same_display(prev[0], disp):
            out.append(
                Finding(
                    "warning",
                    it.file,
                    it.at(*path, "display"),
                    f"display '{disp}' for {system}|{code} differs from '{prev[0]}' in {prev[1]}; "
                    "use one display for a code across the package",
                    TERMINOLOGY,
                )
            )

    value_sets = [it for it in s.items if it.rtype == "ValueSet"]
    for it in value_sets:
        exp = it.resource.get("expansion")
        contains = exp.get("contains") if isinstance(exp, dict) else None
        if not isinstance(contains, list) or not contains:
            out.append(
                Finding(
                    "error",
                    it.file,
                    it.at("expansion"),
                    f"ValueSet {it.rid} has no expansion (expansion.contains); the local engine and "
                    "HAPI (pre-expansion required) only match codes listed there: add an expansion "
                    "listing every code",
                    TERMINOLOGY,
                )
            )
        stack: list[tuple[list[PathPart], Any]] = [(["expansion", "contains"], contains)]
        expanded: set[tuple[str, str]] = set()
        while stack:
            base, entries = stack.pop()
            for i, c in enumerate(entries if isinstance(entries, list) else []):
                if not isinstance(c, dict):
                    continue
                if isinstance(c.get("code"), str):
                    prob = system_problem(c.get("system"))
                    if prob:
                        out.append(Finding(prob[0], it.file, it.at(*base, i, "system"), prob[1], TERMINOLOGY))
                    learn(c.get("system"), c.get("code"), c.get("display"), it.key, it, [*base, i])
                    if isinstance(c.get("system"), str):
                        expanded.add((c["system"], c["code"]))
                elif not c.get("abstract") and "contains" not in c:
                    out.append(
                        Finding(
                            "error",
                            it.file,
                            it.at(*base, i),
                            "expansion entry without a code; give each entry system and code",
                            TERMINOLOGY,
                        )
                    )
                stack.append(([*base, i, "contains"], c.get("contains")))
        compose = it.resource.get("compose")
        includes = compose.get("include") if isinstance(compose, dict) else None
        for i, inc in enumerate(includes if isinstance(includes, list) else []):
            if not isinstance(inc, dict) or "system" not in inc:
                continue
            prob = system_problem(inc.get("system"))
            if prob:
                out.append(Finding(prob[0], it.file, it.at("compose", "include", i, "system"), prob[1], TERMINOLOGY))
            for j, con in enumerate(_list(inc, "concept")):
                if not isinstance(con, dict):
                    continue
                learn(
                    inc.get("system"),
                    con.get("code"),
                    con.get("display"),
                    it.key,
                    it,
                    ["compose", "include", i, "concept", j],
                )
                pair = (inc.get("system"), con.get("code"))
                if expanded and isinstance(pair[0], str) and isinstance(pair[1], str) and pair not in expanded:
                    out.append(
                        Finding(
                            "warning",
                            it.file,
                            it.at("compose", "include", i, "concept", j),
                            f"{pair[0]}|{pair[1]} is in compose but not in the expansion; regenerate the expansion",
                            TERMINOLOGY,
                        )
                    )
    for it in s.items:
        if it.rtype != "CodeSystem" or not it.str_field("url"):
            continue
        stack2: list[tuple[list[PathPart], Any]] = [(["concept"], it.resource.get("concept"))]
        while stack2:
            base, concepts = stack2.pop()
            for i, con in enumerate(concepts if isinstance(concepts, list) else []):
                if isinstance(con, dict):
                    learn(it.str_field("url"), con.get("code"), con.get("display"), it.key, it, [*base, i])
                    stack2.append(([*base, i, "concept"], con.get("concept")))

    def member(system: str, code: str) -> bool:
        return (
            (system, code) in known
            or system.startswith(_INFRASTRUCTURE_PREFIXES)
            or any(t.rtype == "CodeSystem" for t in s.resolve(system))
        )

    for it in s.items:
        if it.rtype != "ActivityDefinition":
            continue
        for path, coding in _codings(it.resource, []):
            if path[:1] in (["meta"], ["extension"]):
                continue
            system, code = coding.get("system"), coding["code"]
            prob = system_problem(system)
            if prob:
                out.append(Finding(prob[0], it.file, it.at(*path, "system"), prob[1], TERMINOLOGY))
                continue
            assert isinstance(system, str)  # noqa: S101 - system_problem checked it
            if not member(system, code):
                out.append(
                    Finding(
                        "warning",
                        it.file,
                        it.at(*path, "code"),
                        f"{system}|{code} is in no value set expansion or code list of the package; "
                        "add it to the value set it belongs to so its display is checked",
                        TERMINOLOGY,
                    )
                )
            disp = coding.get("display")
            ref = known.get((system, code))
            if isinstance(disp, str) and ref and ref[0] and not _same_display(disp, ref[0]):
                out.append(
                    Finding(
                        "warning",
                        it.file,
                        it.at(*path, "display"),
                        f"display '{disp}' for {system}|{code} differs from '{ref[0]}' in {ref[1]}; "
                        "use the package's display",
                        TERMINOLOGY,
                    )
                )
    for lib in s.libs.values():
        if lib.name == "FHIRHelpers" or lib.elm is None:
            continue
        systems: dict[str, str] = {}
        for cs in lib.defs("codeSystems"):
            sid = cs.get("id")
            if isinstance(cs.get("name"), str) and isinstance(sid, str):
                systems[cs["name"]] = sid
            prob = system_problem(sid)
            if prob:
                out.append(
                    Finding(
                        prob[0],
                        lib.file,
                        lib.loc(cs),
                        f'codesystem "{cs.get("name")}": {prob[1]}',
                        TERMINOLOGY,
                    )
                )
        for cd in lib.defs("codes"):
            ref_cs = cd.get("codeSystem")
            cs_name = ref_cs.get("name") if isinstance(ref_cs, dict) else None
            system = systems.get(cs_name) if isinstance(cs_name, str) else None
            code = cd.get("id")
            if system is None or not isinstance(code, str) or system_problem(system):
                continue
            if not member(system, code):
                out.append(
                    Finding(
                        "warning",
                        lib.file,
                        lib.loc(cd),
                        f'code "{cd.get("name")}" ({system}|{code}) is in no value set expansion or '
                        "code list of the package; add it to a value set so its display is checked",
                        TERMINOLOGY,
                    )
                )
            disp = cd.get("display")
            ref = known.get((system, code))
            if isinstance(disp, str) and ref and ref[0] and not _same_display(disp, ref[0]):
                out.append(
                    Finding(
                        "warning",
                        lib.file,
                        lib.loc(cd),
                        f"code \"{cd.get('name')}\" has display '{disp}', but {ref[1]} says "
                        f"'{ref[0]}' for {system}|{code}; use one display",
                        TERMINOLOGY,
                    )
                )
    return out


# ---------------------------------------------------------------- layer 7: conventions


def _coded(value: Any) -> set[tuple[str, str]]:
    """(system, code) pairs of a CodeableConcept."""
    codings = value.get("coding") if isinstance(value, dict) else None
    return (
        {(str(c.get("system")), str(c.get("code"))) for c in codings if isinstance(c, dict)}
        if isinstance(codings, list)
        else set()
    )


def _extensions(node: dict[str, Any], url: str) -> list[dict[str, Any]]:
    ext = node.get("extension")
    return [e for e in ext if isinstance(e, dict) and e.get("url") == url] if isinstance(ext, list) else []


def conventions(s: Subject) -> list[Finding]:
    out: list[Finding] = []
    for it in s.items:
        if it.external or it.rtype not in KNOWLEDGE_TYPES:
            continue
        r = it.resource
        for name in REQUIRED_METADATA:
            v = r.get(name)
            if v is None or v == "":
                out.append(
                    Finding(
                        "error",
                        it.file,
                        it.at(name),
                        f"{it.rtype} {it.rid} has no {name} (CPG/CRMI shareable artifact metadata); add it",
                        CONVENTIONS,
                    )
                )
        name_v = r.get("name")
        if isinstance(name_v, str) and name_v and not _NAME.match(name_v):
            out.append(
                Finding(
                    "warning",
                    it.file,
                    it.at("name"),
                    f"name '{name_v}' should be PascalCase [A-Z][A-Za-z0-9_]* (CRMI name rule), "
                    "usable as a computable identifier",
                    CONVENTIONS,
                )
            )
        caps = _extensions(r, KNOWLEDGE_CAPABILITY)
        if not caps:
            out.append(
                Finding(
                    "error",
                    it.file,
                    it.at("extension"),
                    f"{it.rtype} {it.rid} has no knowledge capability: add extension "
                    f'{{"url": "{KNOWLEDGE_CAPABILITY}", "valueCode": "shareable"}} '
                    "(and computable/publishable/executable as they apply)",
                    CONVENTIONS,
                )
            )
        ext_list = _list(r, "extension")
        for i, e in enumerate(ext_list):
            code = e.get("valueCode") if isinstance(e, dict) else None
            if (
                isinstance(e, dict)
                and e.get("url") == KNOWLEDGE_CAPABILITY
                and not (isinstance(code, str) and code in CAPABILITIES)
            ):
                out.append(
                    Finding(
                        "error",
                        it.file,
                        it.at("extension", i, "valueCode"),
                        f"knowledge capability {e.get('valueCode')!r} is not one of {', '.join(sorted(CAPABILITIES))}",
                        CONVENTIONS,
                    )
                )
        if it.rtype == "PlanDefinition":
            out.extend(_plan_conventions(it))
    return out


def _plan_conventions(it: Item) -> list[Finding]:
    out: list[Finding] = []
    r = it.resource
    actions = _list(r, "action")
    eca = (PLAN_TYPE_CS, "eca-rule") in _coded(r.get("type"))

    def priorities(acts: Any, base: list[PathPart]) -> None:
        for i, a in enumerate(acts if isinstance(acts, list) else []):
            if not isinstance(a, dict):
                continue
            p = a.get("priority")
            if isinstance(p, str) and p not in CDS_PRIORITIES:
                out.append(
                    Finding(
                        "error",
                        it.file,
                        it.at(*base, i, "priority"),
                        f"priority '{p}' has no CDS Hooks card indicator (HAPI throws 'Invalid priority "
                        "code'); use routine (info), urgent (warning) or stat (critical)",
                        CONVENTIONS,
                    )
                )
            priorities(a.get("action"), [*base, i, "action"])

    priorities(actions, ["action"])
    if not eca:
        return out
    has_trigger = False
    for i, a in enumerate(actions):
        if not isinstance(a, dict):
            continue
        for t in _list(a, "trigger"):
            if isinstance(t, dict) and t.get("type") == "named-event" and isinstance(t.get("name"), str):
                has_trigger = True
        checks = (
            (STRENGTH, STRENGTH_CS, {"strong", "weak"}, "strength of recommendation"),
            (QUALITY, QUALITY_CS, {"high", "moderate", "low", "very-low"}, "quality of evidence"),
        )
        for url, system, codes, what in checks:
            exts = _extensions(a, url)
            if not exts:
                out.append(
                    Finding(
                        "error",
                        it.file,
                        it.at("action", i, "extension"),
                        f"recommendation action {i} has no {what} rating: add extension {url} with "
                        f"valueCodeableConcept from {system} ({' | '.join(sorted(codes))})",
                        CONVENTIONS,
                    )
                )
                continue
            pairs = _coded(exts[0].get("valueCodeableConcept"))
            if not any(sys == system and code in codes for sys, code in pairs):
                out.append(
                    Finding(
                        "error",
                        it.file,
                        it.at("action", i, "extension"),
                        f"{what} rating must be a code from {system} ({' | '.join(sorted(codes))}); "
                        f"got {sorted(pairs) or 'no coding'}",
                        CONVENTIONS,
                    )
                )
        docs = _list(a, "documentation")
        quoted = [d for d in docs if isinstance(d, dict) and (d.get("citation") or d.get("display"))]
        if not quoted:
            out.append(
                Finding(
                    "error",
                    it.file,
                    it.at("action", i, "documentation"),
                    f'recommendation action {i} quotes no source: add documentation [{{"type": '
                    '"citation", "display": "<source>", "citation": "<quoted text>"}]',
                    CONVENTIONS,
                )
            )
        elif not (isinstance(docs[0], dict) and docs[0].get("display")):
            out.append(
                Finding(
                    "warning",
                    it.file,
                    it.at("action", i, "documentation", 0, "display"),
                    "documentation[0].display becomes the CDS card's source label; set it",
                    CONVENTIONS,
                )
            )
        if "priority" not in a:
            out.append(
                Finding(
                    "warning",
                    it.file,
                    it.at("action", i, "priority"),
                    "recommendation action has no priority; set routine, urgent or stat (it becomes "
                    "the CDS card indicator)",
                    CONVENTIONS,
                )
            )
    if actions and not has_trigger:
        out.append(
            Finding(
                "error",
                it.file,
                it.at("action"),
                "eca-rule PlanDefinition has no named-event trigger, so no CDS service is registered; "
                'add trigger [{"type": "named-event", "name": "patient-view"}] to an action',
                CONVENTIONS,
            )
        )
    elif not actions:
        out.append(
            Finding(
                "error",
                it.file,
                it.at("action"),
                "recommendation has no action (cpg-computableplandefinition requires 1..*)",
                CONVENTIONS,
            )
        )
    return out
