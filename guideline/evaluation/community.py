"""The scenarios in the CQL community's test layout: `input/tests/library/<Library>/<case>/` with expected results.

The HL7 CQL IGs (US CQL IG, CRMI content IGs) and the CQL VS Code tooling (cqframework/vscode-cql) read
test cases as one folder per library and patient: the patient's resources, one file each named
`<Type>-<id>.json`, plus a `Parameters` resource with id `expected-results` holding the expected value
of each expression of that library. vscode-cql reads per-test-case CQL parameter values from
`input/tests/config.json`; the evaluation time of each case goes there, so a run on a later date
gives the same results. The expected values are produced here by our reference engine (Node
cql-execution) from `tests/cases`, the one source of the scenarios; nothing is typed by hand.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guideline.content.cql import Engine
from guideline.content.package import Package
from guideline.core import elm
from guideline.core.errors import BadInputError, EngineError, UsageError
from guideline.core.evaltime import EVALUATION_TIME_PARAMETER, parse_date_time, time_parameters
from guideline.core.fhir import collection_bundle
from guideline.core.fsutil import check_out_dir, write_tree
from guideline.evaluation.bundles import load_patient_bundle
from guideline.evaluation.patient import ensure_loaded
from guideline.evaluation.population import BatchEngine

EXPECTED_ID = "expected-results"
EXPECTED_FILE = f"Parameters-{EXPECTED_ID}.json"
# How a Parameters resource says "an empty list" and "null": as HAPI's clinical-reasoning Library/$evaluate
# answers (checked against this project's server): a valueBoolean with no value, only an extension (a
# parameter must carry a value, a resource or parts).
EMPTY_LIST_EXT = "http://hl7.org/fhir/StructureDefinition/cqf-isEmptyList"
DATA_ABSENT_EXT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
UCUM = "http://unitsofmeasure.org"


def _absent(name: str) -> dict[str, Any]:
    return {"name": name, "_valueBoolean": {"extension": [{"url": DATA_ABSENT_EXT, "valueCode": "unknown"}]}}


def _fhir_value(name: str, v: Mapping[str, Any]) -> dict[str, Any]:
    """A FHIR object from the engine: a resource in `resource`, an element or primitive in value[x]."""
    body = v.get("json")
    if isinstance(body, dict) and "resourceType" in body:
        return {"name": name, "resource": body}
    fhir_type = str(v.get("fhirType") or "")
    if not fhir_type or body is None:
        return _absent(name)
    return {"name": name, f"value{fhir_type[0].upper()}{fhir_type[1:]}": body}


def _interval(name: str, v: Mapping[str, Any], decimals: set[str], path: str) -> dict[str, Any]:
    low, high = v.get("low"), v.get("high")
    kinds = {x.get("type") for x in (low, high) if isinstance(x, dict)}
    if kinds <= {"DateTime", "Date"} and kinds and v.get("lowClosed", True) and v.get("highClosed", True):
        return {"name": name, "valuePeriod": {k: x["value"] for k, x in (("start", low), ("end", high)) if x}}
    if kinds == {"Quantity"}:
        rng = {k: _quantity(x) for k, x in (("low", low), ("high", high)) if x}
        return {"name": name, "valueRange": rng}
    parts = [p for key, x in (("low", low), ("high", high)) for p in to_parameters(key, x, decimals, path)]
    parts += [{"name": "lowClosed", "valueBoolean": v.get("lowClosed", True)}]
    parts += [{"name": "highClosed", "valueBoolean": v.get("highClosed", True)}]
    return {"name": name, "part": parts}


def _quantity(v: Mapping[str, Any]) -> dict[str, Any]:
    q: dict[str, Any] = {"value": v.get("value")}
    if v.get("unit") not in (None, ""):
        q.update(unit=v["unit"], system=UCUM, code=v["unit"])
    return q


def _coding(v: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v[k] for k in ("system", "version", "code", "display") if v.get(k) is not None}


def _typed(name: str, v: Mapping[str, Any], decimals: set[str], path: str) -> dict[str, Any]:
    """One engine value carrying a `type` (the worker's JSON shape) as one parameter."""
    kind = v.get("type")
    simple: dict[str, Callable[[Mapping[str, Any]], tuple[str, Any]]] = {
        "DateTime": lambda x: ("valueDateTime", x["value"]),
        "Date": lambda x: ("valueDate", x["value"]),
        "Quantity": lambda x: ("valueQuantity", _quantity(x)),
        "Code": lambda x: ("valueCoding", _coding(x)),
        "Concept": lambda x: (
            "valueCodeableConcept",
            {
                "coding": [_coding(c) for c in x.get("codes") or []],
                **({"text": x["display"]} if x.get("display") else {}),
            },
        ),
    }
    if kind in simple:
        key, value = simple[str(kind)](v)
        return {"name": name, key: value}
    if kind == "Interval" or kind == "Uncertainty":
        return _interval(name, {"lowClosed": True, "highClosed": True, **v}, decimals, path)
    if kind == "FHIR":
        return _fhir_value(name, v)
    if kind == "Tuple":
        elements = v.get("elements") or {}
        parts = [p for k, x in elements.items() for p in to_parameters(k, x, decimals, f"{path}.{k}".lstrip("."))]
        return {"name": name, "part": parts}
    raise UsageError(f"expression '{name}' has a value of type {kind} that has no Parameters form")


def to_parameters(name: str, value: Any, decimals: set[str] | None = None, path: str = "") -> list[dict[str, Any]]:
    """The Parameters.parameter entries for one expression's value (a list gives one entry per item).

    `decimals` (see `guideline.core.elm.decimal_paths`) says where the CQL type is Decimal, so that an integral value
    there stays a decimal; `path` is where `value` sits in the expression's result.
    """
    decimals = decimals or set()
    if value is None:
        return [_absent(name)]
    if isinstance(value, list):
        if not value:
            return [{"name": name, "_valueBoolean": {"extension": [{"url": EMPTY_LIST_EXT, "valueBoolean": True}]}}]
        return [p for item in value for p in to_parameters(name, item, decimals, path)]
    if isinstance(value, bool):
        return [{"name": name, "valueBoolean": value}]
    if isinstance(value, str):
        return [{"name": name, "valueString": value}]
    if isinstance(value, int | float):
        if path in decimals or isinstance(value, float) and not value.is_integer():
            return [{"name": name, "valueDecimal": value}]
        return [{"name": name, "valueInteger": int(value)}]
    if isinstance(value, dict):
        return [_typed(name, value, decimals, path)]
    raise UsageError(f"expression '{name}' has a value the engine should not give: {value!r}")


def expected_results(values: Mapping[str, Any], doc: Mapping[str, Any]) -> dict[str, Any]:
    """The `expected-results` Parameters for one library and patient (its ELM `doc`): every expression, in order."""
    decimals = {str(d.get("name")): elm.decimal_paths(d) for d in elm.statements(doc)}
    params = [p for name, value in values.items() for p in to_parameters(name, value, decimals.get(name))]
    return {"resourceType": "Parameters", "id": EXPECTED_ID, "parameter": params}


@dataclass(frozen=True)
class Case:
    """One scenario of tests/cases: its name, pinned evaluation time, patient bundle and expected recommendations.

    `recommendations` maps each recommendation that fires to the sorted codes it proposes.
    """

    name: str
    at: str
    bundle: dict[str, Any]
    patient: str
    recommendations: dict[str, list[str]]


def read_cases(cases_dir: Path) -> list[Case]:
    """Every scenario folder (one holding expected.json and patient.json) under `cases_dir`, in name order."""
    if not cases_dir.is_dir():
        raise BadInputError(f"{cases_dir}: not a folder of scenarios; give the folder holding the case folders")
    out = []
    for folder in sorted(p for p in cases_dir.iterdir() if (p / "expected.json").is_file()):
        try:
            expected = json.loads((folder / "expected.json").read_text(encoding="utf-8"))
            at, recs = str(expected["at"]), {str(k): sorted(v) for k, v in expected["recommendations"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise BadInputError(
                f"{folder / 'expected.json'}: needs 'at' and 'recommendations' ({type(e).__name__}: {e})"
            ) from None
        bundle, pid = load_patient_bundle(folder / "patient.json")
        out.append(Case(folder.name, at, bundle, pid, recs))
    if not out:
        raise BadInputError(f"{cases_dir}: no scenario folders (each holds expected.json and patient.json)")
    return out


def cql_literal(at: str) -> str:
    """A date-time as a CQL DateTime literal (`@2026-06-01T12:00:00Z`), as vscode-cql's config takes it."""
    return "@" + at


MANIFEST = "community-tests.json"


@dataclass
class Export:
    """What `export_layout` wrote: the libraries, the cases, and every file."""

    root: Path
    libraries: list[str]
    cases: list[str]
    files: list[Path] = field(default_factory=list)


def _resource_files(bundle: Mapping[str, Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    for entry in bundle.get("entry", []):
        res = entry.get("resource")
        if isinstance(res, dict) and res.get("id"):
            yield f"{res['resourceType']}-{res['id']}.json", res


def _dump(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def cql_libraries(pkg: Package) -> dict[str, Path]:
    """The package's own CQL libraries (not FHIRHelpers) and their source files, by name."""
    out = {}
    for key, path in pkg.source_of.items():
        name = key.removeprefix("Library/")
        if key.startswith("Library/") and name in pkg.elm and name != "FHIRHelpers":
            cql = pkg.config.cql_dir / f"{name}.cql"
            out[name] = cql if cql.is_file() else path
    return dict(sorted(out.items()))


def evaluate_cases(engine: BatchEngine, key: str, libraries: list[str], cases: list[Case]) -> dict[str, dict[str, Any]]:
    """{case name: {library: {define: value}}}: every library for every case, one engine request per evaluation time.

    `engine` is either evaluator (the Node worker, or the JVM batch evaluator with `JavaEngine`);
    the Node worker runs without its population speed-ups (`plain`), as the reference.
    """
    by_at: dict[str, list[Case]] = {}
    for case in cases:
        by_at.setdefault(case.at, []).append(case)
    out: dict[str, dict[str, Any]] = {}
    for at, group in by_at.items():
        bundles = [json.dumps(c.bundle, separators=(",", ":")) for c in group]
        rows = engine.evaluate_batch(key, libraries, bundles, at, None, time_parameters(at), plain=True)
        for case, row in zip(group, rows, strict=True):
            if not row.get("ok"):
                raise EngineError(f"case {case.name}: the engine failed: {row.get('error')}")
            out[case.name] = row["libraries"]
    return out


def layout_files(pkg: Package, engine: Engine, cases: list[Case]) -> dict[str, bytes]:
    """Every file of the layout (relative path -> bytes), expected values from `engine` as of each case's time."""
    ensure_loaded(pkg, engine)
    libraries = list(cql_libraries(pkg))
    values = evaluate_cases(engine, pkg.key, libraries, cases)
    files: dict[str, bytes] = {}
    for case in cases:
        for library in libraries:
            folder = f"input/tests/library/{library}/{case.name}"
            for filename, res in _resource_files(case.bundle):
                files[f"{folder}/{filename}"] = _dump(res)
            files[f"{folder}/{EXPECTED_FILE}"] = _dump(expected_results(values[case.name][library], pkg.elm[library]))
    files["input/tests/config.json"] = _dump(vscode_config(libraries, cases))
    for name, path in cql_libraries(pkg).items():
        files[f"input/cql/{name}.cql"] = path.read_bytes()
    files["input/cql/cql-options.json"] = _dump(pkg.config.cql_options)
    for res in pkg.resources:
        if res["resourceType"] == "ValueSet":
            files[f"input/vocabulary/valueset/ValueSet-{res['id']}.json"] = _dump(res)
    manifest = {
        "package": f"{pkg.config.package.id}#{pkg.config.package.version}",
        "generatedBy": "guideline export-tests",
        "expectedValuesFrom": {"evaluator": "cql-execution (reference engine, Node)", **engine.versions()},
        "libraries": libraries,
        "cases": [c.name for c in cases],
    }
    files[MANIFEST] = _dump(manifest)
    return files


def export_layout(pkg: Package, engine: Engine, cases: list[Case], out: Path) -> Export:
    """Write `out/input/tests/library/<Library>/<case>/` for every library and case, plus the test config.

    Also writes `out/input/cql/` (the CQL and translator options) and `out/input/vocabulary/valueset/`
    (the value sets with their expansions), so that the folder opens as a CQL project in other tools,
    and `out/community-tests.json` (what made it). `out` is replaced whole, never left half-written:
    it must be new, empty or an earlier export.
    """
    check_out_dir(out, MANIFEST, "test export")
    files = layout_files(pkg, engine, cases)
    written = write_tree(out, files)
    return Export(out, list(cql_libraries(pkg)), [c.name for c in cases], written)


def vscode_config(libraries: list[str], cases: list[Case]) -> dict[str, Any]:
    """vscode-cql's `input/tests/config.json`: each case's "Evaluation Time", per library and case."""
    per_case = {
        c.name: [{"name": EVALUATION_TIME_PARAMETER, "type": "DateTime", "value": cql_literal(c.at)}] for c in cases
    }
    return {
        "testCasesToExclude": [],
        "resultFormat": "individual",
        "parameters": [{"library": lib, "testCases": per_case} for lib in libraries],
    }


def read_layout_case(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """One case folder of the layout: (a collection Bundle of its resources, its expected-results Parameters)."""
    expected_path = folder / EXPECTED_FILE
    try:
        expected = json.loads(expected_path.read_text(encoding="utf-8"))
        resources = [
            json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json")) if p != expected_path
        ]
    except (OSError, ValueError) as e:
        raise BadInputError(f"{folder}: cannot read the test case: {e}") from None
    return collection_bundle(resources), expected


def _instant(text: str) -> str:
    """A date-time as a comparable UTC instant; a date alone stays a date (so precision still counts)."""
    when = parse_date_time(text)
    if not isinstance(when, dt.datetime):
        return text
    if when.tzinfo is None:
        return when.isoformat()
    return when.astimezone(dt.UTC).isoformat()


def _period_end(text: str) -> str:
    """A Period bound: an evaluator may write a CQL Date bound as midnight UTC of that date (HAPI does)."""
    t = _instant(text)
    return t[:10] if t.endswith("T00:00:00+00:00") else t


def _normal(p: Mapping[str, Any]) -> Any:
    """One parameter's value in a form two evaluators' answers can be compared in."""
    if "resource" in p:
        res = {k: v for k, v in p["resource"].items() if k not in ("meta", "text")}
        return ("resource", json.dumps(res, sort_keys=True))
    if "part" in p:
        return ("part", tuple(sorted((str(q.get("name")), repr(_normal(q))) for q in p["part"])))
    for key, value in p.items():
        if key == "_valueBoolean":
            urls = tuple(sorted(e.get("url", "") for e in value.get("extension", [])))
            return ("absent", urls)
        if key.startswith("value"):
            if key == "valuePeriod":
                return (key, tuple(_period_end(value.get(k, "")) for k in ("start", "end")))
            if key in ("valueDateTime", "valueInstant"):
                return (key, _instant(value))
            if key == "valueDecimal":
                return (key, float(value))
            return (key, json.dumps(value, sort_keys=True))
    return ("none", None)


def parameter_values(params: Mapping[str, Any]) -> dict[str, list[Any]]:
    """A Parameters resource as {name: [normalised values, sorted]} (a list result is several same-named entries)."""
    out: dict[str, list[Any]] = {}
    for p in params.get("parameter", []):
        out.setdefault(str(p.get("name")), []).append(_normal(p))
    return {k: sorted(v, key=repr) for k, v in out.items()}


def diff_parameters(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    """The expressions whose values differ between two Parameters (missing ones included), one line each."""
    want, got = parameter_values(expected), parameter_values(actual)
    out = []
    for name in sorted(set(want) | set(got)):
        if want.get(name) != got.get(name):
            out.append(f"{name}: expected {want.get(name, 'nothing')}, got {got.get(name, 'nothing')}")
    return out
