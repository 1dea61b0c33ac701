"""Indicator Measures: the period, counting as HAPI counts a proportion, and the MeasureReport shape."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from guideline.core.errors import BadInputError, ContentError, UsageError
from guideline.evaluation import measures as m

EXPRS = {"initial-population": "Initial Population", "denominator": "Denominator", "numerator": "Numerator"}
PERIOD = m.Period(dt.date(2026, 1, 1), dt.date(2026, 12, 31))


def _def(stratifiers: tuple[m.Stratifier, ...] | None = None) -> m.MeasureDef:
    strats = stratifiers or (
        m.Stratifier("age-group", "Age group", "Age Group"),
        m.Stratifier("administrative-sex", "Administrative sex", "Administrative Sex"),
    )
    resource = {"improvementNotation": {"coding": [{"code": "increase"}]}}
    return m.MeasureDef("GLIndX", "http://example.org/Measure/GLIndX|0.3.0", "GLIndX", "main", EXPRS, strats, resource)


def _values(ip: bool, den: bool, num: bool, age: str = "adult", sex: str = "female") -> dict[str, Any]:
    return {"Initial Population": ip, "Denominator": den, "Numerator": num, "Age Group": age, "Administrative Sex": sex}


def test_period_is_parsed_as_whole_days_with_the_evaluation_time_at_its_end() -> None:
    """Verify that --period START/END gives the CQL interval and GLCommon's evaluation time at the last second."""
    p = m.parse_period("2026-01-01/2026-12-31")
    assert p == PERIOD
    params = p.parameters()
    assert params["Measurement Period"]["low"] == {"type": "DateTime", "value": "2026-01-01T00:00:00Z"}
    assert params["Measurement Period"]["high"] == {"type": "DateTime", "value": "2026-12-31T23:59:59Z"}
    assert params["Evaluation Time"] == {"type": "DateTime", "value": "2026-12-31T23:59:59Z"}
    assert p.fhir() == {"start": "2026-01-01", "end": "2026-12-31"}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("2026-01-01", "START/END"),
        ("2026-01-01/2026-13-01", "START/END"),
        ("2026/2027", "START/END"),
        ("2026-12-31/2026-01-01", "before the start"),
    ],
)
def test_a_bad_period_is_a_usage_error_saying_the_form(text: str, says: str) -> None:
    """Verify that a malformed or reversed period is refused with the expected form or the reason."""
    with pytest.raises(UsageError, match=says):
        m.parse_period(text)


def test_a_numerator_counts_only_inside_the_denominator_and_the_initial_population() -> None:
    """Verify that membership is nested as HAPI evaluates a proportion, whatever the defines say alone."""
    t = m.tally(
        [_def()],
        [
            ("a", {"GLIndX": _values(True, True, True)}),
            ("b", {"GLIndX": _values(True, False, True)}),  # numerator outside the denominator
            ("c", {"GLIndX": _values(False, True, True, age="child")}),  # outside the initial population
            ("d", {"GLIndX": _values(True, True, False, sex="male")}),
            ("e", {}),  # the library's values missing: no membership, counted nowhere
        ],
    )[0]
    assert t.overall.counts == {"initial-population": 3, "denominator": 2, "numerator": 1}
    assert t.overall.score() == m.Decimal("0.500000")
    assert t.strata["age-group"]["child"].counts == {"initial-population": 0, "denominator": 0, "numerator": 0}
    assert t.strata["administrative-sex"]["male"].counts["denominator"] == 1
    assert t.strata["administrative-sex"]["male"].score() == 0
    assert t.strata["age-group"]["child"].score() is None


def test_the_summary_report_has_counts_score_and_strata_and_no_score_for_an_empty_denominator() -> None:
    """Verify the MeasureReport shape: populations in order, measureScore only with a denominator, strata by value."""
    t = m.tally(
        [_def()],
        [("a", {"GLIndX": _values(True, True, True)}), ("b", {"GLIndX": _values(False, False, False, age="child")})],
    )[0]
    r = m.summary_report(t, PERIOD, date="2026-12-07T00:00:00Z")
    assert r["resourceType"] == "MeasureReport" and r["type"] == "summary" and r["status"] == "complete"
    assert r["measure"] == "http://example.org/Measure/GLIndX|0.3.0" and r["period"] == PERIOD.fhir()
    group = r["group"][0]
    assert [p["code"]["coding"][0]["code"] for p in group["population"]] == list(m.PROPORTION_POPULATIONS)
    assert [p["count"] for p in group["population"]] == [1, 1, 1]
    assert group["measureScore"] == {"value": 1.0}
    age = group["stratifier"][0]
    assert age["code"] == [{"text": "Age group"}]
    by_value = {s["value"]["text"]: s for s in age["stratum"]}
    assert set(by_value) == {"adult", "child"}
    assert "measureScore" not in by_value["child"]
    assert "contained" not in r and all("subjectResults" not in p for p in group["population"])


def test_a_subject_list_names_each_populations_patients_in_a_contained_list() -> None:
    """Verify that --subject-list adds a contained List per population (overall and per stratum) with references."""
    t = m.tally(
        [_def()], [("a", {"GLIndX": _values(True, True, False)}), ("b", {"GLIndX": _values(True, True, True)})]
    )[0]
    r = m.summary_report(t, PERIOD, date="2026-12-07T00:00:00Z", subject_list=True)
    assert r["type"] == "subject-list"
    lists = {c["id"]: c for c in r["contained"]}
    num = r["group"][0]["population"][2]["subjectResults"]["reference"].lstrip("#")
    assert [e["item"]["reference"] for e in lists[num]["entry"]] == ["Patient/b"]
    den = r["group"][0]["population"][1]["subjectResults"]["reference"].lstrip("#")
    assert [e["item"]["reference"] for e in lists[den]["entry"]] == ["Patient/a", "Patient/b"]
    assert "age-group-adult-numerator" in lists


def test_a_report_read_back_gives_the_same_comparable_counts() -> None:
    """Verify that from_report (the server path) rebuilds what the local tally counted, strata included."""
    t = m.tally(
        [_def()],
        [(p, {"GLIndX": _values(True, p != "c", p == "a", age="child" if p == "b" else "adult")}) for p in "abc"],
    )[0]
    back = m.from_report(t.measure, m.summary_report(t, PERIOD, date="x"))
    assert m.comparable(back) == m.comparable(t)


def test_comparable_ignores_empty_strata() -> None:
    """Verify that a stratum with no member in any population does not count as a difference (HAPI may omit it)."""
    t = m.tally([_def()], [("a", {"GLIndX": _values(False, False, False, age="child")})])[0]
    assert m.comparable(t)["strata"] == {}


def test_a_report_that_is_not_a_measurereport_is_refused() -> None:
    """Verify that from_report names what it got instead of a MeasureReport."""
    with pytest.raises(BadInputError, match="OperationOutcome, not a MeasureReport"):
        m.from_report(_def(), {"resourceType": "OperationOutcome"})


def test_the_package_measures_are_the_five_indicators(config: Any, engine: Any) -> None:
    """Verify that the built package's Measures are read as proportions with both stratifiers and their libraries."""
    from guideline.content.package import build_package  # noqa: PLC0415 - the slow build only for this test

    defs = m.measure_defs(build_package(config, engine))
    assert [d.id for d in defs] == [
        "GLInd1InsulinAssessed",
        "GLInd2Referrals",
        "GLInd3Diet",
        "GLInd4Bromocriptine",
        "GLSafe1UnsafeProposals",
    ]
    for d in defs:
        assert d.library == d.id and d.populations == EXPRS
        assert [s.expression for s in d.stratifiers] == ["Age Group", "Administrative Sex"]
        assert d.url.endswith(f"/Measure/{d.id}|0.3.0")


def test_a_measure_that_is_not_a_proportion_is_a_content_error() -> None:
    """Verify that a cohort (or any other scoring) Measure is refused by name rather than miscounted."""
    from guideline.content.package import Package  # noqa: PLC0415

    pkg = Package(config=None)  # type: ignore[arg-type]
    pkg.resources = [{"resourceType": "Measure", "id": "X", "scoring": {"coding": [{"code": "cohort"}]}}]
    with pytest.raises(ContentError, match="Measure/X: only proportion scoring"):
        m.measure_defs(pkg)
