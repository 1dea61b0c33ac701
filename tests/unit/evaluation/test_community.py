"""Verify the community test layout (`guideline export-tests`): its shape, and its expected values on both engines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from guideline.cli import main as cli
from guideline.content.cql import Engine
from guideline.content.package import Package, build_package
from guideline.core.config import Config
from guideline.core.errors import ExitCode
from guideline.evaluation.community import (
    DATA_ABSENT_EXT,
    EMPTY_LIST_EXT,
    EXPECTED_FILE,
    MANIFEST,
    Case,
    diff_parameters,
    evaluate_cases,
    expected_results,
    read_cases,
    read_layout_case,
    to_parameters,
)
from guideline.evaluation.jvm import JavaEngine
from guideline.evaluation.patient import ensure_loaded
from tests.support.casedata import CASES


@pytest.fixture(scope="module")
def package(config: Config, engine: Engine) -> Package:
    pkg = build_package(config, engine)
    ensure_loaded(pkg, engine)
    return pkg


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The layout as `guideline export-tests` writes it (the CLI, end to end)."""
    out = tmp_path_factory.mktemp("community") / "export"
    assert cli.main(["export-tests", "--out", str(out)]) == 0
    return out


def _defines(pkg: Package, library: str) -> list[str]:
    defs = pkg.elm[library]["library"]["statements"]["def"]
    return [d["name"] for d in defs if d.get("type", "ExpressionDef") == "ExpressionDef"]


def _scalar(pkg: Package, library: str) -> set[str]:
    """The defines whose CQL type is a single Boolean or String (the values the JVM batch evaluator returns)."""
    defs = pkg.elm[library]["library"]["statements"]["def"]
    return {d["name"] for d in defs if str(d.get("resultTypeName", "")).endswith(("}Boolean", "}String"))}


def _layout(exported: Path, pkg: Package) -> Iterator[tuple[str, Case, dict[str, Any]]]:
    """(library, the case as read back from its layout folder, its expected-results Parameters) for every folder."""
    config = json.loads((exported / "input" / "tests" / "config.json").read_text(encoding="utf-8"))
    times = {
        (block["library"], case): params[0]["value"].removeprefix("@")
        for block in config["parameters"]
        for case, params in block["testCases"].items()
    }
    for lib_dir in sorted((exported / "input" / "tests" / "library").iterdir()):
        for folder in sorted(lib_dir.iterdir()):
            bundle, expected = read_layout_case(folder)
            case = Case(folder.name, times[(lib_dir.name, folder.name)], bundle, folder.name, {})
            yield lib_dir.name, case, expected


def test_layout_holds_every_library_case_and_expression(exported: Path, package: Package) -> None:
    """Verify that each library has one folder per scenario holding its resources and every expression's value."""
    libraries = sorted(n for n in package.elm if n != "FHIRHelpers")
    tests = exported / "input" / "tests"
    assert sorted(p.name for p in (tests / "library").iterdir()) == libraries
    names = [c.name for c in CASES]
    for library in libraries:
        assert sorted(p.name for p in (tests / "library" / library).iterdir()) == names
        for case in CASES:
            folder = tests / "library" / library / case.name
            bundle = json.loads((case / "patient.json").read_text(encoding="utf-8"))
            want = {f"{e['resource']['resourceType']}-{e['resource']['id']}.json" for e in bundle["entry"]}
            assert {p.name for p in folder.iterdir()} == want | {EXPECTED_FILE}, folder
            expected = json.loads((folder / EXPECTED_FILE).read_text(encoding="utf-8"))
            assert expected["resourceType"] == "Parameters" and expected["id"] == "expected-results"
            assert {p["name"] for p in expected["parameter"]} == set(_defines(package, library)), folder
    config = json.loads((tests / "config.json").read_text(encoding="utf-8"))
    assert {b["library"] for b in config["parameters"]} == set(libraries)
    at = json.loads((CASES[0] / "expected.json").read_text(encoding="utf-8"))["at"]
    first = config["parameters"][0]["testCases"][CASES[0].name]
    assert first == [{"name": "Evaluation Time", "type": "DateTime", "value": "@" + at}]
    assert sorted(p.stem for p in (exported / "input" / "cql").glob("*.cql")) == libraries
    assert json.loads((exported / MANIFEST).read_text(encoding="utf-8"))["cases"] == names


def test_expected_values_reproduce_from_the_layout_on_the_reference_engine(
    exported: Path, package: Package, engine: Engine
) -> None:
    """Verify that the layout's own files, evaluated again (Node), give exactly its expected-results."""
    rows = list(_layout(exported, package))
    libraries = sorted({lib for lib, _, _ in rows})
    cases = {c.name: c for _, c, _ in rows}
    values = evaluate_cases(engine, package.key, libraries, list(cases.values()))
    bad = []
    for library, case, expected in rows:
        got = expected_results(values[case.name][library], package.elm[library])
        bad += [f"{library}/{case.name}: {d}" for d in diff_parameters(expected, got)]
    assert not bad, "\n".join(bad[:20])


def test_expected_values_agree_with_the_jvm_engine(exported: Path, package: Package, config: Config) -> None:
    """Verify that the JVM batch evaluator (the Java CQL engine HAPI runs) gives every Boolean and text value alike.

    The batch evaluator returns only Booleans and text (what the pathway walk reads); the other
    values are checked against HAPI's own Library/$evaluate in tests/integration/test_conformance.py.
    """
    rows = list(_layout(exported, package))
    libraries = sorted({lib for lib, _, _ in rows})
    cases = {c.name: c for _, c, _ in rows}
    java = JavaEngine(package, config, 2)
    try:
        expressions = {lib: _defines(package, lib) for lib in libraries}
        by_at: dict[str, list[Case]] = {}
        for c in cases.values():
            by_at.setdefault(c.at, []).append(c)
        values: dict[str, Any] = {}
        for at, group in by_at.items():
            bundles = [json.dumps(c.bundle) for c in group]
            for c, row in zip(
                group, java.evaluate_batch(package.key, libraries, bundles, at, expressions), strict=True
            ):
                assert row["ok"], row
                values[c.name] = row["libraries"]
    finally:
        java.close()
    checked, bad = 0, []
    for library, case, expected in rows:
        jvm, scalar = values[case.name][library], _scalar(package, library)
        for p in expected["parameter"]:
            for key in ("valueBoolean", "valueString"):
                if key in p and p["name"] in scalar:
                    checked += 1
                    if jvm.get(p["name"]) != p[key]:
                        bad.append(f"{library}/{case.name} {p['name']}: {p[key]!r}, JVM {jvm.get(p['name'])!r}")
    assert not bad, "\n".join(bad[:20])
    assert checked > 20 * len(cases)  # most expressions are Boolean: the check covered them


def test_hand_written_defines_agree_with_the_layout(exported: Path) -> None:
    """Verify that every define value written by hand in tests/cases/*/expected.json is the layout's value."""
    checked = 0
    for case in read_cases(CASES[0].parent):
        defines = json.loads((CASES[0].parent / case.name / "expected.json").read_text(encoding="utf-8"))["defines"]
        for library, values in defines.items():
            folder = exported / "input" / "tests" / "library" / library / case.name
            expected = json.loads((folder / EXPECTED_FILE).read_text(encoding="utf-8"))
            mine = {
                "resourceType": "Parameters",
                "parameter": [p for n, v in values.items() for p in to_parameters(n, v)],
            }
            names = set(values)
            layout = {**expected, "parameter": [p for p in expected["parameter"] if p["name"] in names]}
            assert diff_parameters(mine, layout) == [], f"{library}/{case.name}"
            checked += len(values)
    assert checked > 100


@pytest.mark.parametrize(
    ("value", "decimals", "want"),
    [
        (True, set(), [{"name": "x", "valueBoolean": True}]),
        ("a", set(), [{"name": "x", "valueString": "a"}]),
        (36, set(), [{"name": "x", "valueInteger": 36}]),
        (25, {""}, [{"name": "x", "valueDecimal": 25}]),
        (6.5, set(), [{"name": "x", "valueDecimal": 6.5}]),
        (
            None,
            set(),
            [{"name": "x", "_valueBoolean": {"extension": [{"url": DATA_ABSENT_EXT, "valueCode": "unknown"}]}}],
        ),
        ([], set(), [{"name": "x", "_valueBoolean": {"extension": [{"url": EMPTY_LIST_EXT, "valueBoolean": True}]}}]),
        ([1, 2], set(), [{"name": "x", "valueInteger": 1}, {"name": "x", "valueInteger": 2}]),
        ({"type": "Date", "value": "2026-06-01"}, set(), [{"name": "x", "valueDate": "2026-06-01"}]),
        (
            {"type": "Quantity", "value": 25, "unit": "ng/mL"},
            set(),
            [
                {
                    "name": "x",
                    "valueQuantity": {
                        "value": 25,
                        "unit": "ng/mL",
                        "system": "http://unitsofmeasure.org",
                        "code": "ng/mL",
                    },
                }
            ],
        ),
        (
            {
                "type": "Interval",
                "low": {"type": "Date", "value": "2025-06-01"},
                "high": {"type": "Date", "value": "2026-06-01"},
                "lowClosed": True,
                "highClosed": True,
            },
            set(),
            [{"name": "x", "valuePeriod": {"start": "2025-06-01", "end": "2026-06-01"}}],
        ),
        (
            {"type": "Code", "system": "http://loinc.org", "code": "1558-6", "display": None, "version": None},
            set(),
            [{"name": "x", "valueCoding": {"system": "http://loinc.org", "code": "1558-6"}}],
        ),
        (
            {"type": "Tuple", "elements": {"a": 1, "b": None}},
            set(),
            [
                {
                    "name": "x",
                    "part": [
                        {"name": "a", "valueInteger": 1},
                        {
                            "name": "b",
                            "_valueBoolean": {"extension": [{"url": DATA_ABSENT_EXT, "valueCode": "unknown"}]},
                        },
                    ],
                }
            ],
        ),
        (
            [{"type": "Tuple", "elements": {"value": 40, "n": 2}}],
            {"value"},
            [{"name": "x", "part": [{"name": "value", "valueDecimal": 40}, {"name": "n", "valueInteger": 2}]}],
        ),
        (
            {"type": "FHIR", "fhirType": "Patient", "json": {"resourceType": "Patient", "id": "p"}},
            set(),
            [{"name": "x", "resource": {"resourceType": "Patient", "id": "p"}}],
        ),
        (
            {"type": "FHIR", "fhirType": "CodeableConcept", "json": {"text": "t"}},
            set(),
            [{"name": "x", "valueCodeableConcept": {"text": "t"}}],
        ),
    ],
)
def test_values_become_parameters(value: Any, decimals: set[str], want: list[dict[str, Any]]) -> None:
    """Verify each engine value's Parameters form (HAPI's Library/$evaluate shapes for null and empty lists)."""
    assert to_parameters("x", value, decimals) == want


def test_comparison_sees_a_changed_value_and_tolerates_notation() -> None:
    """Verify that diff_parameters names a changed value, and ignores order, meta and date-time notation."""
    ours = {"parameter": [{"name": "a", "valueInteger": 1}, {"name": "p", "valuePeriod": {"start": "2025-06-01"}}]}
    theirs = {
        "parameter": [
            {"name": "p", "valuePeriod": {"start": "2025-06-01T00:00:00+00:00"}},
            {"name": "a", "valueInteger": 1},
        ]
    }
    assert diff_parameters(ours, theirs) == []
    changed = {"parameter": [{"name": "a", "valueInteger": 2}, theirs["parameter"][0]]}
    assert [d.split(":")[0] for d in diff_parameters(ours, changed)] == ["a"]
    assert [d.split(":")[0] for d in diff_parameters(ours, {"parameter": []})] == ["a", "p"]


def test_export_refuses_a_folder_of_other_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that --out pointing at a folder of other things is a usage error, and nothing is deleted."""
    (tmp_path / "keep.txt").write_text("mine", encoding="utf-8")
    assert cli.main(["export-tests", "--out", str(tmp_path)]) == ExitCode.USAGE
    assert "holds other files" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text(encoding="utf-8") == "mine"
