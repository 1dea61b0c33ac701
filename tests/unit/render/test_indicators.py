"""Verify the offline indicator report (`render_report`): a bar chart per MeasureReport, counts, undefined scores."""

from __future__ import annotations

import copy
import re
from html.parser import HTMLParser
from typing import Any

import pytest

from guideline.core.config import Config
from guideline.core.errors import BadInputError
from guideline.render.indicators import counted_population, render_report
from tests.support.indicators import fixture_measures, fixture_reports


class _Report(HTMLParser):
    """What a reader of the page gets: each chart's rows (label, hover title, value text), tags and attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.charts: dict[str, list[dict[str, Any]]] = {}
        self._chart = ""
        self._row: dict[str, Any] | None = None
        self._in: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "svg":
            self._chart = str(a.get("id"))
            self.charts[self._chart] = []
        elif tag == "g" and a.get("class") == "row":
            self._row = {"label": a.get("data-label"), "title": "", "texts": [], "rects": []}
            self.charts[self._chart].append(self._row)
        elif tag == "rect" and self._row is not None:
            self._row["rects"].append(a)
        self._in.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._in and self._in[-1] == tag:
            self._in.pop()
        if tag == "g":
            self._row = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._row is not None and self._in:
            if self._in[-1] == "title":
                self._row["title"] += data
            elif self._in[-1] == "text":
                self._row["texts"].append(data)


def _parse(page: str) -> _Report:
    p = _Report()
    p.feed(page)
    return p


@pytest.fixture(scope="module")
def reports(config: Config) -> list[dict[str, Any]]:
    return fixture_reports(config)


@pytest.fixture(scope="module")
def measures(config: Config) -> list[dict[str, Any]]:
    return fixture_measures(config)


@pytest.fixture(scope="module")
def page(reports: list[dict[str, Any]], measures: list[dict[str, Any]]) -> str:
    return render_report(reports, measures)


def test_one_chart_per_report_with_a_bar_per_stratum(page: str, reports: list[dict[str, Any]]) -> None:
    """Verify that each MeasureReport gets a chart with the overall bar and one bar per stratum, in report order."""
    p = _parse(page)
    assert list(p.charts) == [f"chart-{i + 1}" for i in range(len(reports))]
    for i, report in enumerate(reports):
        strata = [
            s["value"].get("text") or s["value"]["coding"][0]["code"]
            for st in report["group"][0].get("stratifier", [])
            for s in st["stratum"]
        ]
        assert [r["label"] for r in p.charts[f"chart-{i + 1}"]] == ["All patients", *strata]


def test_proportion_bars_carry_scores_and_counts(page: str) -> None:
    """Verify that a proportion's rows show the score with numerator and denominator, also in the hover title."""
    rows = {r["label"]: r for r in _parse(page).charts["chart-1"]}
    assert rows["All patients"]["texts"][-1] == "42.9 % (3 of 7)"
    assert rows["female"]["texts"][-1] == "50.0 % (2 of 4)"  # a stratum coded by value.coding
    assert rows["male"]["texts"][-1] == "33.3 % (1 of 3)"
    assert "numerator 3" in rows["All patients"]["title"] and "denominator 7" in rows["All patients"]["title"]
    bar = next(r for r in rows["female"]["rects"] if "bar" in str(r.get("class")))
    track = next(r for r in rows["female"]["rects"] if r.get("class") == "track")
    assert int(str(bar["width"])) * 2 == int(str(track["width"])), "50 % is half the track"


def test_undefined_score_is_labelled_never_zero(page: str) -> None:
    """Verify that a denominator of 0 is labelled undefined, drawn as a hatched empty box, never as 0 %."""
    p = _parse(page)
    child = next(r for r in p.charts["chart-1"] if r["label"] == "child")
    assert child["texts"][-1] == "undefined (denominator 0)"
    assert [r.get("class") for r in child["rects"]] == ["none"], "no bar and no track: nothing is drawn as 0"
    empty = p.charts["chart-3"][0]
    assert empty["texts"][-1] == "undefined (denominator 0)"
    assert not re.search(r"(?<![\d.])0\.0 %", page), "no score is drawn as 0 % in the fixtures"


def test_a_server_score_of_zero_without_denominator_is_still_undefined(
    reports: list[dict[str, Any]], measures: list[dict[str, Any]]
) -> None:
    """Verify that a measureScore of 0 over a denominator of 0 (as some servers write) is shown as undefined."""
    report = copy.deepcopy(reports[2])
    report["group"][0]["measureScore"] = {"value": 0}
    rows = _parse(render_report([report], measures)).charts["chart-1"]
    assert rows[0]["texts"][-1] == "undefined (denominator 0)"


def test_score_is_computed_when_the_report_leaves_it_out(
    reports: list[dict[str, Any]], measures: list[dict[str, Any]]
) -> None:
    """Verify that without a measureScore the score is numerator over denominator less exclusions."""
    report = copy.deepcopy(reports[0])
    del report["group"][0]["measureScore"]
    report["group"][0]["population"].append({"code": {"coding": [{"code": "denominator-exclusion"}]}, "count": 1})
    rows = _parse(render_report([report], measures)).charts["chart-1"]
    assert rows[0]["texts"][-1] == "50.0 % (3 of 6)"


def _pops(*pairs: tuple[str, int]) -> list[dict[str, Any]]:
    return [{"code": {"coding": [{"code": code}]}, "count": n} for code, n in pairs]


def test_safety_proportion_is_drawn_as_its_numerator_count(
    page: str, reports: list[dict[str, Any]], measures: list[dict[str, Any]]
) -> None:
    """Verify that a safety indicator scored as a proportion shows its numerator as a count of the patients at
    risk, flagged when not 0, and plainly when 0."""
    p = _parse(page)
    rows = {r["label"]: r for r in p.charts["chart-2"]}
    assert rows["All patients"]["texts"][-1] == "2 of 5 patients (expected 0)"
    assert rows["adult"]["texts"][-1] == "1 of 3 patients (expected 0)"
    assert any("alert" in str(r.get("class")) for r in rows["adult"]["rects"])
    assert "2 patients: expected 0" in "".join(p.text)
    assert "40.0 %" not in page, "a safety count is not drawn as a share"
    bar = next(r for r in rows["adult"]["rects"] if "bar" in str(r.get("class")))
    track = next(r for r in rows["adult"]["rects"] if r.get("class") == "track")
    assert round(int(str(track["width"])) / 3) == int(str(bar["width"])), "1 of 3 at risk is a third of the track"
    zero = copy.deepcopy(reports[1])
    strata = zero["group"][0]["stratifier"][0]["stratum"]
    for pop in [*zero["group"][0]["population"], *(p for s in strata for p in s["population"])]:
        if pop["code"]["coding"][0]["code"] == "numerator":
            pop["count"] = 0
    quiet = render_report([zero], measures)
    assert "0 of 5 patients" in quiet and "0 patients</span> as expected" in quiet
    assert not [a for t, a in _parse(quiet).tags if "alert" in str(a.get("class"))], "nothing is flagged at 0"


def test_cohort_is_drawn_as_a_count(reports: list[dict[str, Any]], measures: list[dict[str, Any]]) -> None:
    """Verify that a Measure scored as a cohort is drawn as the count of its initial population."""
    measure = copy.deepcopy(next(m for m in measures if m["id"] == "GLSafeFixture"))
    measure["scoring"]["coding"][0]["code"] = "cohort"
    report = copy.deepcopy(reports[1])
    report["group"][0]["population"] = _pops(("initial-population", 2))
    report["group"][0]["stratifier"][0]["stratum"][0]["population"] = _pops(("initial-population", 1))
    rows = {r["label"]: r for r in _parse(render_report([report], [measure])).charts["chart-1"]}
    assert rows["All patients"]["texts"][-1] == "2 patients (expected 0)"
    assert rows["adult"]["texts"][-1] == "1 patient (expected 0)"


@pytest.mark.parametrize(
    ("scoring", "notation", "safety", "counted"),
    [
        ("cohort", "", False, "initial-population"),
        ("proportion", "decrease", True, "numerator"),
        ("proportion", "decrease", False, ""),  # a decrease is not by itself a safety count
        ("proportion", "increase", True, ""),
        ("proportion", "", False, ""),
    ],
)
def test_which_measures_are_read_as_counts(scoring: str, notation: str, safety: bool, counted: str) -> None:
    """Verify that cohorts, and safety proportions (improvement by decrease, naming project safety rules), are
    read as counts; every other Measure as a share."""
    measure: dict[str, Any] = {"scoring": {"coding": [{"code": scoring}]}, "relatedArtifact": []}
    if notation:
        measure["improvementNotation"] = {"coding": [{"code": notation}]}
    if safety:
        measure["relatedArtifact"].append({"type": "documentation", "label": "project-safety-rule-3"})
    assert counted_population(measure) == counted


def test_text_is_escaped(page: str) -> None:
    """Verify that titles with markup characters are escaped in the heading, the chart and the hover titles."""
    assert "insulin assessed &lt;in the period&gt; &amp; more" in page
    assert "<in the period>" not in page


def test_page_is_complete_offline_and_titled(page: str) -> None:
    """Verify that the page is one complete HTML document that loads nothing and runs nothing."""
    p = _parse(page)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not [t for t, _ in p.tags if t in ("script", "link", "img", "iframe", "object")]
    csp = next(a for t, a in p.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in str(csp["content"])
    urls = [v for _, a in p.tags for k, v in a.items() if k in ("href", "src") and v]
    assert all(u.startswith("#") for u in urls), urls
    assert "2026-01-01 to 2026-12-31" in page
    ids = [a["id"] for _, a in p.tags if a.get("id")]
    assert len(ids) == len(set(ids)), "ids are unique across the charts"
    assert all(a.get("role") == "img" and a.get("aria-labelledby") for t, a in p.tags if t == "svg")


def test_pure_and_deterministic(reports: list[dict[str, Any]], measures: list[dict[str, Any]]) -> None:
    """Verify that rendering leaves its inputs unchanged and gives the same page twice."""
    before = copy.deepcopy((reports, measures))
    assert render_report(reports, measures) == render_report(reports, measures)
    assert (reports, measures) == before


def test_without_measures_the_canonical_titles_the_chart(reports: list[dict[str, Any]]) -> None:
    """Verify that a report whose Measure is not given is titled by its canonical, and a count stays a count."""
    page = render_report(reports, [])
    assert re.search(r"<h2[^>]*>http://example\.org/fhir/gl-treatment/Measure/GLIndFixture1</h2>", page)
    rows = _parse(page).charts["chart-2"]
    assert rows[0]["texts"][-1] == "40.0 % (2 of 5)", "without its Measure, a report with a denominator is a share"
    bare = copy.deepcopy(reports[1])
    bare["group"][0] = {"population": _pops(("initial-population", 3))}
    assert "3 patients (expected 0)" in render_report([bare], [])  # no denominator: it can only be a count


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda r: r.update(resourceType="Measure"), "reports[0]: not a MeasureReport"),
        (lambda r: r.update(group=[]), "reports[0].group"),
        (lambda r: r["group"][0]["population"][1].update(count="7"), "reports[0].group[0].population[1].count"),
        (lambda r: r["group"][0]["population"][1].update(count=-1), "reports[0].group[0].population[1].count"),
        (
            lambda r: r["group"][0]["stratifier"][1]["stratum"][0]["population"][0].update(count=1.5),
            "reports[0].group[0].stratifier[1].stratum[0].population[0].count",
        ),
        (lambda r: r["group"][0].update(measureScore={"value": "high"}), "reports[0].group[0].measureScore.value"),
    ],
)
def test_bad_reports_are_located(reports: list[dict[str, Any]], mutate: Any, where: str) -> None:
    """Verify that a report that cannot be drawn is a BadInputError naming where in the input it is wrong."""
    bad = copy.deepcopy(reports[0])
    mutate(bad)
    with pytest.raises(BadInputError) as e:
        render_report([bad], [])
    assert e.value.message.startswith(where), e.value.message
