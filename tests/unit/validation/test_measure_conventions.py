"""Layer 7 on Measures: the CPG computable metric's required elements, each missing one located."""

from __future__ import annotations

import json

from guideline.validation.conventions import _measure_conventions
from guideline.validation.subject import Item
from tests.support import ROOT

MEASURE = ROOT / "fhir_resources" / "measure" / "measure-GLInd1InsulinAssessed.json"


def _findings(resource: dict[str, object]) -> list[str]:
    return [f.message for f in _measure_conventions(Item(resource, "m.json", "Measure"))]


def test_the_package_measures_meet_the_metric_profile() -> None:
    """Verify that every Measure of the package has what cpg-computablemetric requires."""
    for path in sorted((ROOT / "fhir_resources" / "measure").glob("*.json")):
        assert _findings(json.loads(path.read_text(encoding="utf-8"))) == [], path.name


def test_each_missing_element_is_named() -> None:
    """Verify that scoring, improvementNotation, populations and a second library are each reported."""
    m = json.loads(MEASURE.read_text(encoding="utf-8"))
    del m["scoring"], m["improvementNotation"]
    m["group"][0]["population"] = []
    m["library"] = ["Library/A", "Library/B"]
    found = _findings(m)
    assert any("no scoring" in f for f in found) and any("no improvementNotation" in f for f in found)
    assert any("no group with population" in f for f in found) and any("names 2 libraries" in f for f in found)
