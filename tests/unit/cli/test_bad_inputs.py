"""Verify the bad-input corpus: each broken input yields a finding at the exact file and location."""

from __future__ import annotations

import base64
import io
import json
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from guideline.content.cql import Engine
from tests.support.validate_fixtures import (
    AD,
    CQL_COMMON,
    CQL_REC,
    FILES,
    LIB_COMMON,
    LIB_REC,
    PD,
    VS_COND,
    VS_DIET,
    build_dist,
    copy_fixture,
    describe,
    edit_json,
    edit_text,
    run,
)

BASE = "http://example.org/fhir/fixture"
TARGET = "{target}"  # the validated path itself (a bundle or package outside any source mapping)


@dataclass(frozen=True)
class Case:
    """One broken input: how to break the fixture, and the finding that must come out."""

    id: str
    setup: Callable[[Path, Engine], Path | None]  # edits the project; returns a path to validate, or None
    file: str
    location: str
    fragment: str
    severity: str = "error"


def _drop(rel: str, name: str) -> Callable[[Path, Engine], None]:
    """Put a committed broken file from tests/bad_inputs/files into the project."""

    def setup(root: Path, _e: Engine) -> None:
        shutil.copy(FILES / name, root / rel)

    return setup


def _json(rel: str, fn: Callable[[dict[str, Any]], Any]) -> Callable[[Path, Engine], None]:
    def setup(root: Path, _e: Engine) -> None:
        edit_json(root, rel, fn)

    return setup


def _text(rel: str, old: str, new: str) -> Callable[[Path, Engine], None]:
    def setup(root: Path, _e: Engine) -> None:
        edit_text(root, rel, old, new)

    return setup


def _action(fn: Callable[[dict[str, Any]], Any]) -> Callable[[Path, Engine], None]:
    return _json(PD, lambda d: fn(d["action"][0]))


def _bundle(fn: Callable[[dict[str, dict[str, Any]]], Any], outside: bool = False) -> Callable[[Path, Engine], Path]:
    """Build the fixture, then edit dist/bundle.json (resources by 'Type/id'); optionally move it
    outside the project so nothing maps back to sources."""

    def setup(root: Path, engine: Engine) -> Path:
        path = build_dist(root, engine) / "bundle.json"
        bundle = json.loads(path.read_text(encoding="utf-8"))
        fn({f"{e['resource']['resourceType']}/{e['resource']['id']}": e["resource"] for e in bundle["entry"]})
        if outside:
            path = root.parent / "elsewhere" / "bundle.json"
            path.parent.mkdir()
        path.write_text(json.dumps(bundle), encoding="utf-8")
        return path

    return setup


def _raw_bundle(fn: Callable[[dict[str, Any]], Any]) -> Callable[[Path, Engine], Path]:
    def setup(root: Path, engine: Engine) -> Path:
        path = build_dist(root, engine) / "bundle.json"
        bundle = json.loads(path.read_text(encoding="utf-8"))
        fn(bundle)
        out = root.parent / "elsewhere" / "bundle.json"
        out.parent.mkdir()
        out.write_text(json.dumps(bundle), encoding="utf-8")
        return out

    return setup


def _huge(name: str, outside: bool) -> Callable[[Path, Engine], Path | None]:
    """A 50 MB file, made sparse at test time (never committed)."""

    def setup(root: Path, _e: Engine) -> Path | None:
        path = (root.parent / name) if outside else (root / "fhir_resources" / "valueset" / name)
        with path.open("wb") as f:
            f.truncate(50 * 1024 * 1024)
        return path if outside else None

    return setup


def _set(d: dict[str, Any], key: str, value: Any) -> None:
    d[key] = value


def _del(d: dict[str, Any], key: str) -> None:
    del d[key]


def _new_file(rel: str, data: dict[str, Any]) -> Callable[[Path, Engine], None]:
    def setup(root: Path, _e: Engine) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(json.dumps(data, indent=2), encoding="utf-8")

    return setup


def _both(*steps: Callable[[Path, Engine], Any]) -> Callable[[Path, Engine], None]:
    def setup(root: Path, engine: Engine) -> None:
        for s in steps:
            s(root, engine)

    return setup


def _remove(rel: str) -> Callable[[Path, Engine], None]:
    def setup(root: Path, _e: Engine) -> None:
        (root / rel).unlink()

    return setup


def _package_garbage(root: Path, _e: Engine) -> Path:
    out = root.parent / "broken.tgz"
    shutil.copy(FILES / "not-a-package.tgz", out)
    return out


def _strength(code: str) -> Callable[[dict[str, Any]], None]:
    def fn(a: dict[str, Any]) -> None:
        a["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] = code

    return fn


def _ad_coding(key: str, value: str) -> Callable[[dict[str, Any]], None]:
    def fn(d: dict[str, Any]) -> None:
        d["code"]["coding"][0][key] = value

    return fn


def _vs_contains(key: str, value: str) -> Callable[[dict[str, Any]], None]:
    def fn(d: dict[str, Any]) -> None:
        d["expansion"]["contains"][0][key] = value

    return fn


def _url(key: str, url: str) -> Callable[[dict[str, dict[str, Any]]], None]:
    def fn(res: dict[str, dict[str, Any]]) -> None:
        res[key]["url"] = url

    return fn


def _second_ad(root: Path, _e: Engine) -> None:
    src = root / AD
    (root / "fhir_resources/activitydefinition/activitydefinition-FxDiet-copy.json").write_text(
        src.read_text(encoding="utf-8"), encoding="utf-8"
    )


PATHWAY = {
    "resourceType": "PlanDefinition",
    "id": "FxPathway",
    "name": "FxPathway",
    "title": "Fx Pathway",
    "description": "A pathway whose recommendation leads back to it.",
    "type": {
        "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/plan-definition-type", "code": "clinical-protocol"}
        ]
    },
    "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/cqf-knowledgeCapability", "valueCode": "shareable"}],
    "action": [{"title": "Diet", "definitionCanonical": "PlanDefinition/FxRec01"}],
}


def _back_to_pathway(a: dict[str, Any]) -> None:
    """A sub-action of the recommendation that leads back to the pathway (a cycle through two plans)."""
    a["action"] = [{"title": "Back", "definitionCanonical": "PlanDefinition/FxPathway"}]


EXTRA_LIBRARY = {
    "resourceType": "Library",
    "id": "FxExtra",
    "name": "FxExtra",
    "title": "Fx Extra",
    "description": "A Library whose CQL was never written.",
    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/library-type", "code": "logic-library"}]},
    "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/cqf-knowledgeCapability", "valueCode": "shareable"}],
}


# ---- third-party-style bundles: the CQL and ELM a Library carries (not the project's cql/)


def _content(lib: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in lib["content"] if c["contentType"] == kind)


def _cql_edit(rid: str, old: str, new: str) -> Callable[[dict[str, dict[str, Any]]], None]:
    """Replace `old` by `new` in the text/cql of Library/<rid> (the ELM is left as it was)."""

    def fn(res: dict[str, dict[str, Any]]) -> None:
        c = _content(res[f"Library/{rid}"], "text/cql")
        text = base64.b64decode(c["data"]).decode("utf-8")
        assert old in text, f"{old!r} not in {rid}"
        c["data"] = base64.b64encode(text.replace(old, new).encode("utf-8")).decode("ascii")

    return fn


def _elm_edit(rid: str, fn: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, dict[str, Any]]], None]:
    """Apply `fn` to the parsed application/elm+json of Library/<rid>."""

    def edit(res: dict[str, dict[str, Any]]) -> None:
        c = _content(res[f"Library/{rid}"], "application/elm+json")
        elm = json.loads(base64.b64decode(c["data"]))
        fn(elm["library"])
        c["data"] = base64.b64encode(json.dumps(elm).encode("utf-8")).decode("ascii")

    return edit


def _statement(lib: dict[str, Any], name: str) -> dict[str, Any]:
    return next(d for d in lib["statements"]["def"] if d["name"] == name)


def _drop_statement(name: str) -> Callable[[dict[str, Any]], None]:
    def fn(lib: dict[str, Any]) -> None:
        lib["statements"]["def"].remove(_statement(lib, name))

    return fn


def _translator(version: str) -> Callable[[dict[str, Any]], None]:
    def fn(lib: dict[str, Any]) -> None:
        next(a for a in lib["annotation"] if a["type"] == "CqlToElmInfo")["translatorVersion"] = version

    return fn


def _drop_entry(key: str) -> Callable[[dict[str, Any]], None]:
    def fn(bundle: dict[str, Any]) -> None:
        bundle["entry"] = [
            e for e in bundle["entry"] if f"{e['resource']['resourceType']}/{e['resource']['id']}" != key
        ]

    return fn


def _package(fn: Callable[[dict[str, dict[str, Any]]], Any]) -> Callable[[Path, Engine], Path]:
    """Build the fixture, edit the resources of dist/package.tgz, write the package elsewhere."""

    def setup(root: Path, engine: Engine) -> Path:
        src = build_dist(root, engine) / "package.tgz"
        members: list[tuple[tarfile.TarInfo, bytes]] = []
        with tarfile.open(src, "r:gz") as tar:
            for m in tar:
                f = tar.extractfile(m)
                members.append((m, f.read() if f else b""))
        resources = {}
        for m, raw in members:
            if m.name.endswith(".json") and not m.name.endswith(("package.json", ".index.json")):
                r = json.loads(raw)
                resources[m.name] = r
        fn({f"{r['resourceType']}/{r['id']}": r for r in resources.values()})
        out = root.parent / "elsewhere" / "package.tgz"
        out.parent.mkdir()
        with tarfile.open(out, "w:gz") as tar:
            for m, raw in members:
                data = json.dumps(resources[m.name]).encode("utf-8") if m.name in resources else raw
                m.size = len(data)
                tar.addfile(m, io.BytesIO(data))
        return out

    return setup


CPG_TYPO = "http://hl7.org/fhir/uv/cpg/CodeSystem/cpg-activity-type-csx"
REC = "Library/FxRec01 CQL "
COMMON = "Library/FxCommon CQL "
THIRD_PARTY = [
    Case(
        "carried-cql-syntax-error",
        _bundle(
            _cql_edit("FxCommon", 'exists "GL Diagnoses"', 'exists "GL Diagnoses"\n\ndefine "Broken": (1 +\n'), True
        ),
        TARGET,
        f"{COMMON}24:8",
        'Syntax error at "Insulin Results"',
    ),
    Case(
        "carried-cql-type-error",
        _bundle(_cql_edit("FxRec01", "'Offer a low-calorie diet'", "'Offer a low-calorie diet' + 1"), True),
        TARGET,
        f"{REC}17:3",
        "Could not resolve call to operator Add",
    ),
    Case(
        "carried-cql-unknown-define",
        _bundle(_cql_edit("FxRec01", 'Common."Has GL"', 'Common."Has GLX"'), True),
        TARGET,
        f"{REC}11:10",
        "Could not resolve identifier Has GLX in library FxCommon",
    ),
    Case(
        "carried-cql-error-in-package",
        _package(_cql_edit("FxRec01", "'Offer a low-calorie diet'", "'Offer a low-calorie diet' and true")),
        TARGET + "!package/Library-FxRec01.json",
        f"{REC}17:3",
        "Could not resolve call to operator And",
    ),
    Case(
        "carried-cql-error-in-dist",
        _bundle(_cql_edit("FxCommon", 'exists "GL Diagnoses"', 'exists "GL Diagnoses"\n\ndefine "Broken": (1 +\n')),
        LIB_COMMON,
        f"{COMMON}24:8",
        'Syntax error at "Insulin Results"',
    ),
    Case(
        "elm-missing-define",
        _bundle(_elm_edit("FxRec01", _drop_statement("Advice")), True),
        TARGET,
        "Bundle.entry[5].resource.content[1]",
        'defined only in the CQL: "Advice"',
    ),
    Case(
        "elm-extra-define",
        _bundle(_cql_edit("FxRec01", 'define "Advice"', 'define "Counsel"'), True),
        TARGET,
        "Bundle.entry[5].resource.content[1]",
        'defined only in the ELM: "Advice"',
    ),
    Case(
        "elm-other-result-type",
        _bundle(
            _elm_edit(
                "FxRec01",
                lambda lib: _set(_statement(lib, "Advice"), "resultTypeName", "{urn:hl7-org:elm-types:r1}Integer"),
            ),
            True,
        ),
        TARGET,
        "Bundle.entry[5].resource.content[1]",
        'other result type in the ELM: "Advice"',
    ),
    Case(
        "elm-other-translator",
        _bundle(_elm_edit("FxCommon", _translator("3.10.0")), True),
        TARGET,
        "Bundle.entry[4].resource.content[1]",
        "made by translator 3.10.0, but the Library claims translator 5.3.0",
    ),
    Case(
        "include-missing-from-bundle",
        _raw_bundle(_drop_entry("Library/FxCommon")),
        TARGET,
        f"{REC}6:1",
        "FxCommon",
    ),
    Case(
        "include-wrong-version-pin",
        _bundle(_cql_edit("FxRec01", "include FxCommon version '1.0.0'", "include FxCommon version '2.0.0'"), True),
        TARGET,
        f"{REC}6:1",
        "FxCommon was included with version 2.0.0, but id: FxCommon and version 1.0.0 of the library was found",
    ),
    Case(
        "library-header-version-pin",
        _bundle(_cql_edit("FxCommon", "library FxCommon version '1.0.0'", "library FxCommon version '1.1.0'"), True),
        TARGET,
        f"{COMMON}1:1",
        "declares version '1.1.0' but Library/FxCommon has version '1.0.0'",
    ),
]

CASES = [
    # ---- layer 1: JSON syntax (source files)
    Case(
        "empty-file",
        _drop("fhir_resources/valueset/empty.json", "empty.json"),
        "fhir_resources/valueset/empty.json",
        "",
        "file is empty",
    ),
    Case(
        "truncated-json",
        _drop("fhir_resources/plandefinition/truncated.json", "truncated.json"),
        "fhir_resources/plandefinition/truncated.json",
        "7:16",
        "invalid JSON: Unterminated string",
    ),
    Case(
        "bom",
        _drop("fhir_resources/valueset/bom.json", "bom.json"),
        "fhir_resources/valueset/bom.json",
        "1:1",
        "byte-order mark",
    ),
    Case(
        "non-utf8",
        _drop("fhir_resources/valueset/non-utf8.json", "non-utf8.json"),
        "fhir_resources/valueset/non-utf8.json",
        "4:25",
        "byte 0xef is not valid UTF-8",
    ),
    Case(
        "trailing-comma",
        _drop("fhir_resources/valueset/trailing-comma.json", "trailing-comma.json"),
        "fhir_resources/valueset/trailing-comma.json",
        "5:1",
        "Expecting property name",
    ),
    Case(
        "json-array",
        _drop("fhir_resources/valueset/not-an-object.json", "not-an-object.json"),
        "fhir_resources/valueset/not-an-object.json",
        "$",
        "not a FHIR resource",
    ),
    Case(
        "no-resource-type",
        _drop("fhir_resources/valueset/no-resource-type.json", "no-resource-type.json"),
        "fhir_resources/valueset/no-resource-type.json",
        "$",
        "string 'resourceType'",
    ),
    Case(
        "50mb-source-file",
        _huge("valueset-huge.json", outside=False),
        "fhir_resources/valueset/valueset-huge.json",
        "",
        "over the 5242880-byte limit",
    ),
    Case(
        "50mb-bundle",
        _huge("huge-bundle.json", outside=True),
        TARGET,
        "",
        "over the 33554432-byte limit for a knowledge package",
    ),
    # ---- layer 2: the R4 JSON schema
    Case(
        "wrong-resource-type",
        _json(PD, lambda d: _set(d, "resourceType", "PlanDefinitoin")),
        PD,
        "resourceType",
        "did you mean 'PlanDefinition'?",
    ),
    Case(
        "r5-only-resource-type",
        _json(AD, lambda d: _set(d, "resourceType", "Citation")),
        AD,
        "resourceType",
        "'Citation' is not a FHIR R4 resource type (it was added in R4B/R5)",
    ),
    Case(
        "unknown-element",
        _json(PD, lambda d: _set(d, "titel", "Fx")),
        PD,
        "PlanDefinition.titel",
        "unknown element 'titel'",
    ),
    Case(
        "unknown-nested-element",
        _action(lambda a: _set(a, "conditon", a.pop("condition"))),
        PD,
        "PlanDefinition.action[0].conditon",
        "did you mean 'condition'?",
    ),
    Case(
        "cardinality-single-as-list",
        _action(lambda a: _set(a, "title", ["a", "b"])),
        PD,
        "PlanDefinition.action[0].title",
        "has at most one value (0..1)",
    ),
    Case(
        "cardinality-list-as-single",
        _json(PD, lambda d: _set(d, "library", "Library/FxRec01")),
        PD,
        "PlanDefinition.library",
        "repeats (0..*): it must be a JSON array",
    ),
    Case(
        "bad-date",
        _json(AD, lambda d: _set(d, "approvalDate", "15/01/2026")),
        AD,
        "ActivityDefinition.approvalDate",
        "is not a valid FHIR date",
    ),
    Case(
        "bad-id",
        _json(AD, lambda d: _set(d, "id", "Fx_Diet")),
        AD,
        "ActivityDefinition.id",
        "is not a valid FHIR id",
    ),
    Case(
        "bad-uri",
        _json(PD, lambda d: _set(d["relatedArtifact"][0], "url", "http://example.org/a b")),
        PD,
        "PlanDefinition.relatedArtifact[0].url",
        "is not a valid FHIR url",
    ),
    Case(
        "required-binding",
        _action(lambda a: _set(a["condition"][0], "kind", "applicable")),
        PD,
        "PlanDefinition.action[0].condition[0].kind",
        "required binding",
    ),
    Case(
        "boolean-as-string",
        _json(AD, lambda d: _set(d, "doNotPerform", "no")),
        AD,
        "ActivityDefinition.doNotPerform",
        "must be true or false",
    ),
    Case(
        "schema-required-element",
        _json(VS_COND, lambda d: _set(d, "compose", {})),
        VS_COND,
        "ValueSet.compose.include",
        "is required",
    ),
    Case(
        "unknown-contained-type",
        _json(PD, lambda d: _set(d, "contained", [{"resourceType": "Nope"}])),
        PD,
        "PlanDefinition.contained[0].resourceType",
        "'Nope' is not a FHIR R4 resource type",
    ),
    Case(
        "required-binding-not-in-schema",
        _json(AD, lambda d: _set(d, "kind", "ServiceRequestt")),
        AD,
        "ActivityDefinition.kind",
        "is not allowed here (required binding)",
    ),
    # ---- layer 3: R4B model
    Case(
        "impossible-date",
        _json(AD, lambda d: _set(d, "approvalDate", "2026-02-30")),
        AD,
        "ActivityDefinition.approvalDate",
        "day value is outside expected range",
    ),
    Case(
        "missing-relatedartifact-type",
        _json(PD, lambda d: _del(d["relatedArtifact"][0], "type")),
        PD,
        "PlanDefinition.relatedArtifact[0].type",
        "is required",
    ),
    Case(
        "missing-expression-language",
        _action(lambda a: _del(a["condition"][0]["expression"], "language")),
        PD,
        "PlanDefinition.action[0].condition[0].expression.language",
        "is required",
    ),
    Case(
        "null-in-array-breaks-build",
        _json(VS_COND, lambda d: d["expansion"]["contains"].append(None)),
        VS_COND,
        "ValueSet.expansion.contains",
        "None is not allowed as an element",
    ),
    # ---- layer 4: references
    Case(
        "duplicate-id",
        _second_ad,
        "fhir_resources/activitydefinition/activitydefinition-FxDiet.json",
        "id",
        "duplicate resource ActivityDefinition/FxDiet",
    ),
    Case(
        "dangling-definition-canonical",
        _action(lambda a: _set(a, "definitionCanonical", "ActivityDefinition/FxNope")),
        PD,
        "PlanDefinition.action[0].definitionCanonical",
        "the package has no ActivityDefinition/FxNope",
    ),
    Case(
        "dangling-library",
        _json(PD, lambda d: _set(d, "library", ["Library/FxNope"])),
        PD,
        "PlanDefinition.library[0]",
        "the package has no Library/FxNope",
    ),
    Case(
        "canonical-version-mismatch",
        _action(lambda a: _set(a, "definitionCanonical", f"{BASE}/ActivityDefinition/FxDiet|0.9.0")),
        PD,
        "PlanDefinition.action[0].definitionCanonical",
        "asks for version 0.9.0",
    ),
    Case(
        "canonical-wrong-target-type",
        _json(PD, lambda d: _set(d, "library", ["ActivityDefinition/FxDiet"])),
        PD,
        "PlanDefinition.library[0]",
        "only Library resources may be referenced here",
    ),
    Case(
        "unknown-external-canonical",
        _json(PD, lambda d: _set(d["relatedArtifact"][0], "resource", "http://other.example/Library/X")),
        PD,
        "PlanDefinition.relatedArtifact[0].resource",
        "neither in the package nor a known external",
    ),
    Case(
        "contained-canonical-missing",
        _action(lambda a: _set(a, "definitionCanonical", "#nope")),
        PD,
        "PlanDefinition.action[0].definitionCanonical",
        "'#nope' names no contained resource",
    ),
    Case(
        "action-cycle-self",
        _action(lambda a: _set(a, "definitionCanonical", "PlanDefinition/FxRec01")),
        PD,
        "PlanDefinition.action[0].definitionCanonical",
        "reaches PlanDefinition/FxRec01 again (PlanDefinition/FxRec01 -> PlanDefinition/FxRec01)",
    ),
    Case(
        "action-cycle-pathway-recommendation",
        _both(
            _new_file("fhir_resources/plandefinition/plandefinition-FxPathway.json", PATHWAY), _action(_back_to_pathway)
        ),
        PD,
        "PlanDefinition.action[0].action[0].definitionCanonical",
        "(PlanDefinition/FxPathway -> PlanDefinition/FxRec01 -> PlanDefinition/FxPathway)",
    ),
    Case(
        "url-not-type-id",
        _bundle(_url("PlanDefinition/FxRec01", f"{BASE}/PlanDefinition/Other")),
        PD,
        "PlanDefinition.url",
        "must end in /PlanDefinition/FxRec01",
    ),
    Case(
        "duplicate-url",
        _bundle(_url("ValueSet/fx-diets", f"{BASE}/ValueSet/fx-conditions"), outside=True),
        TARGET,
        "Bundle.entry[1].resource.url",
        "duplicate canonical",
    ),
    Case(
        "relative-canonical-in-bundle",
        _bundle(lambda r: _set(r["PlanDefinition/FxRec01"], "library", ["Library/FxRec01"]), outside=True),
        TARGET,
        "Bundle.entry[7].resource.library[0]",
        "is not an absolute canonical URL",
    ),
    # ---- layer 5: CQL
    Case(
        "library-missing-cql",
        _new_file("fhir_resources/library/library-FxExtra.json", EXTRA_LIBRARY),
        "fhir_resources/library/library-FxExtra.json",
        "Library.content",
        "has no CQL: add cql/FxExtra.cql",
    ),
    Case("cql-without-library", _remove(LIB_COMMON), CQL_COMMON, "1:1", "has no Library resource"),
    Case(
        "undefined-define",
        _action(lambda a: _set(a["condition"][0]["expression"], "expression", "Is Aplicable")),
        PD,
        "PlanDefinition.action[0].condition[0].expression",
        'did you mean "Is Applicable"?',
    ),
    Case(
        "non-boolean-condition",
        _action(lambda a: _set(a["condition"][0]["expression"], "expression", "GL Diagnoses")),
        PD,
        "PlanDefinition.action[0].condition[0].expression",
        "returns List<FHIR.Condition>, not Boolean",
    ),
    Case(
        "undefined-dynamic-value",
        _action(lambda a: _set(a["dynamicValue"][0]["expression"], "expression", "Advise")),
        PD,
        "PlanDefinition.action[0].dynamicValue[0].expression",
        'names define "Advise"',
    ),
    Case(
        "plan-without-library",
        _json(PD, lambda d: _del(d, "library")),
        PD,
        "PlanDefinition.library",
        "has no library",
    ),
    Case(
        "cql-syntax-error",
        _text(CQL_REC, 'define "Advice":', 'define "Advice" ::'),
        CQL_REC,
        "16:18",
        "Syntax error at :",
    ),
    Case(
        "cql-type-error",
        _text(CQL_REC, "'Offer a low-calorie diet'", "1 + 'diet'"),
        CQL_REC,
        "17:3",
        "Could not resolve call to operator Add with signature (System.Integer, System.String)",
    ),
    Case(
        "include-missing-library",
        _text(CQL_REC, "include FxCommon version", "include FxNope version"),
        CQL_REC,
        "6:1",
        "Could not load source for library FxNope",
    ),
    Case(
        "include-version-mismatch",
        _text(CQL_REC, "FxCommon version '1.0.0'", "FxCommon version '2.0.0'"),
        CQL_REC,
        "6:1",
        "was included with version 2.0.0",
    ),
    Case(
        "cql-version-vs-library",
        _both(
            _text(CQL_COMMON, "library FxCommon version '1.0.0'", "library FxCommon version '1.1.0'"),
            _text(CQL_REC, "FxCommon version '1.0.0'", "FxCommon version '1.1.0'"),
        ),
        CQL_COMMON,
        "1:1",
        "declares version '1.1.0' but Library/FxCommon has version '1.0.0'",
    ),
    Case(
        "library-name-not-cql-name",
        _json(LIB_COMMON, lambda d: _set(d, "name", "FxCommonLogic")),
        LIB_COMMON,
        "Library.name",
        "must equal the CQL library name 'FxCommon'",
    ),
    Case(
        "cql-valueset-not-in-package",
        _text(CQL_COMMON, "ValueSet/fx-conditions", "ValueSet/fx-nope"),
        CQL_COMMON,
        "9:1",
        "is not in the package",
    ),
    Case(
        "include-without-library-resource-in-bundle",
        _bundle(lambda r: _set(r["Library/FxCommon"], "name", "FxShared"), outside=True),
        TARGET,
        "Library/FxRec01 CQL 6:1",
        "the package has no Library named FxCommon",
    ),
    # ---- layer 6: terminology
    Case(
        "system-name-not-uri",
        _json(AD, _ad_coding("system", "SNOMED")),
        AD,
        "ActivityDefinition.code.coding[0].system",
        "use 'http://snomed.info/sct' exactly",
    ),
    Case(
        "system-trailing-slash",
        _json(VS_DIET, _vs_contains("system", "http://snomed.info/sct/")),
        VS_DIET,
        "ValueSet.expansion.contains[0].system",
        "not the canonical URI of SNOMED CT",
    ),
    Case(
        "system-vendor-site",
        _json(VS_COND, lambda d: _set(d["compose"]["include"][0], "system", "http://www.snomed.org")),
        VS_COND,
        "ValueSet.compose.include[0].system",
        "use 'http://snomed.info/sct'",
    ),
    Case(
        "system-oid-in-cql",
        _text(CQL_COMMON, "'http://loinc.org'", "'urn:oid:2.16.840.1.113883.6.1'"),
        CQL_COMMON,
        "7:1",
        "names LOINC by its OID; use its canonical URI 'http://loinc.org'",
        "warning",
    ),
    Case(
        "system-oid-in-valueset",
        _json(VS_COND, lambda d: _set(d["compose"]["include"][0], "system", "urn:oid:2.16.840.1.113883.6.96")),
        VS_COND,
        "ValueSet.compose.include[0].system",
        "names SNOMED CT by its OID; use its canonical URI 'http://snomed.info/sct'",
        "warning",
    ),
    Case(
        "system-typo-cpg-activity-type",
        _json(AD, _ad_coding("system", CPG_TYPO)),
        AD,
        "ActivityDefinition.code.coding[0].system",
        f"did you mean '{CPG_TYPO[:-1]}'?",
    ),
    Case(
        "system-typo-in-third-party-bundle",
        _bundle(lambda r: _set(r["ActivityDefinition/FxDiet"]["code"]["coding"][0], "system", CPG_TYPO), True),
        TARGET,
        "Bundle.entry[6].resource.code.coding[0].system",
        f"did you mean '{CPG_TYPO[:-1]}'?",
    ),
    Case(
        "system-typo-tho-plan-type",
        _json(
            PD,
            lambda d: _set(
                d["type"]["coding"][0], "system", "http://terminology.hl7.org/CodeSystem/plan-definition-typ"
            ),
        ),
        PD,
        "PlanDefinition.type.coding[0].system",
        "did you mean 'http://terminology.hl7.org/CodeSystem/plan-definition-type'?",
    ),
    Case(
        "system-typo-snomed",
        _json(VS_DIET, _vs_contains("system", "http://snomed.info/sctt")),
        VS_DIET,
        "ValueSet.expansion.contains[0].system",
        "did you mean 'http://snomed.info/sct'?",
    ),
    Case(
        "system-unknown",
        _json(AD, _ad_coding("system", "http://codes.example.com/diets")),
        AD,
        "ActivityDefinition.code.coding[0].system",
        "unknown code system 'http://codes.example.com/diets'",
        "warning",
    ),
    Case(
        "system-loinc-slash",
        _json(AD, _ad_coding("system", "http://loinc.org/")),
        AD,
        "ActivityDefinition.code.coding[0].system",
        "use 'http://loinc.org' exactly",
    ),
    Case(
        "valueset-without-expansion",
        _json(VS_COND, lambda d: _del(d, "expansion")),
        VS_COND,
        "ValueSet.expansion",
        "has no expansion",
    ),
    Case(
        "display-disagrees",
        _json(AD, _ad_coding("display", "Low fat diet")),
        AD,
        "ActivityDefinition.code.coding[0].display",
        "differs from 'Low calorie diet - prophylaxis'",
        "warning",
    ),
    Case(
        "code-not-in-package",
        _json(AD, _ad_coding("code", "435701000124100")),
        AD,
        "ActivityDefinition.code.coding[0].code",
        "is in no value set expansion",
        "warning",
    ),
    Case(
        "cql-code-display-disagrees",
        _text(CQL_COMMON, "display 'Insulin [Units", "display 'Insulin level [Units"),
        CQL_COMMON,
        "11:1",
        "use one display",
        "warning",
    ),
    # ---- layer 7: conventions
    Case(
        "missing-strength",
        _action(lambda a: a["extension"].pop(0)),
        PD,
        "PlanDefinition.action[0].extension",
        "no strength of recommendation rating",
    ),
    Case(
        "missing-quality",
        _action(lambda a: a["extension"].pop(1)),
        PD,
        "PlanDefinition.action[0].extension",
        "no quality of evidence rating",
    ),
    Case(
        "bad-strength-code",
        _action(_strength("very-strong")),
        PD,
        "PlanDefinition.action[0].extension",
        "strength of recommendation rating must be a code",
    ),
    Case(
        "missing-quote",
        _action(lambda a: _del(a, "documentation")),
        PD,
        "PlanDefinition.action[0].documentation",
        "quotes no source",
    ),
    Case(
        "priority-asap",
        _action(lambda a: _set(a, "priority", "asap")),
        PD,
        "PlanDefinition.action[0].priority",
        "use routine (info), urgent (warning) or stat (critical)",
    ),
    Case(
        "no-named-event",
        _action(lambda a: _del(a, "trigger")),
        PD,
        "PlanDefinition.action",
        "no named-event trigger",
    ),
    Case("missing-title", _json(LIB_REC, lambda d: _del(d, "title")), LIB_REC, "Library.title", "has no title"),
    Case(
        "missing-description",
        _json(AD, lambda d: _del(d, "description")),
        AD,
        "ActivityDefinition.description",
        "has no description",
    ),
    Case(
        "missing-knowledge-capability",
        _json(LIB_REC, lambda d: _del(d, "extension")),
        LIB_REC,
        "Library.extension",
        "has no knowledge capability",
    ),
    Case(
        "bad-knowledge-capability",
        _json(VS_COND, lambda d: _set(d["extension"][0], "valueCode", "sharable")),
        VS_COND,
        "ValueSet.extension[0].valueCode",
        "is not one of computable",
    ),
    # ---- bundles and packages
    Case("package-not-gzip", _package_garbage, TARGET, "", "cannot read the package archive"),
    Case(
        "bundle-entry-without-resource",
        _raw_bundle(lambda b: b["entry"][0].pop("resource")),
        TARGET,
        "Bundle.entry[0].resource",
        "entry has no resource object",
    ),
    Case(
        "bundle-bad-request-method",
        _raw_bundle(lambda b: _set(b["entry"][2]["request"], "method", "FETCH")),
        TARGET,
        "Bundle.entry[2].request.method",
        "required binding",
    ),
    *THIRD_PARTY,
]


def test_corpus_is_large_enough() -> None:
    """Verify that the corpus keeps at least 40 broken inputs with unique ids, 10 of them third-party bundles."""
    assert len(CASES) >= 40
    assert len(THIRD_PARTY) >= 10
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, engine: Engine) -> None:
    """Verify that a broken input yields a finding with the exact file, location and message."""
    root = copy_fixture(tmp_path)
    target = case.setup(root, engine)
    report = run(root, engine, target)
    file = case.file.replace(TARGET, str(target))
    hits = [
        f
        for f in report.findings
        if f.file == file and f.location == case.location and case.fragment in f.message and f.severity == case.severity
    ]
    assert hits, f"no {case.severity} at {file} | {case.location} containing {case.fragment!r}; got:\n" + describe(
        report.findings
    )
    assert all(f.layer != "internal" for f in report.findings), describe(report.findings)
    if case.severity == "error":
        assert report.exit_code == 1
