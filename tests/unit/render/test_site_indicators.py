"""Verify the site's indicator pages: one per Measure of the package, read generically from the Measures.

The pages are tested on fixture Measures and a fixture CQL library (tests/data/indicators) added to the
built package, and on the package's own indicator Measures (whose stratifiers are components, as CR needs).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from guideline.content.cql import Engine
from guideline.content.package import Package, build_package
from guideline.core.config import Config
from guideline.core.errors import ContentError
from guideline.render.build import site_model
from guideline.render.model import Site
from guideline.render.site import site_files
from tests.support.indicators import FIXTURE_LIBRARY, with_fixture_measures
from tests.unit.render import test_site as site_checks


@pytest.fixture(scope="module")
def plain_package(config: Config, engine: Engine) -> Package:
    return build_package(config, engine)


@pytest.fixture(scope="module")
def package(plain_package: Package, engine: Engine) -> Package:
    return with_fixture_measures(plain_package, engine)


def _measure(pkg: Package, mid: str) -> dict[str, Any]:
    return next(r for r in pkg.resources if r["resourceType"] == "Measure" and r["id"] == mid)


def test_the_packages_own_measures_are_the_indicators(plain_package: Package, cases: list[dict[str, Any]]) -> None:
    """Verify that the package's own Measures, and only they, become indicator pages (none: no page, no section)."""
    site = site_model(plain_package, cases)
    files = site_files(plain_package, cases, site)
    measures = sorted(str(r["id"]) for r in plain_package.resources if r["resourceType"] == "Measure")
    assert [i.id for i in site.indicators] == measures
    assert sorted(f for f in files if f.startswith("ind-")) == [f"ind-{m}.html" for m in measures]
    assert (b'<h2 id="indicators">' in files["index.html"]) == bool(measures)


def test_component_stratifiers_show_each_components_define(plain_package: Package, cases: list[dict[str, Any]]) -> None:
    """Verify that a stratifier given as components (the package's own Measures) shows each component's define."""
    site = site_model(plain_package, cases)
    ind = next(i for i in site.indicators if i.id == "GLInd1InsulinAssessed")
    assert [(c.code, c.definition.name) for c in ind.stratifiers] == [
        ("Age group (child / adult)", "Age Group"),
        ("Administrative sex", "Administrative Sex"),
    ]


def test_an_indicator_per_measure_with_its_criteria(package: Package, site: Site) -> None:
    """Verify that each Measure becomes an indicator with its populations, stratifiers, scoring and defines."""
    fixtures = [i for i in site.indicators if i.library == FIXTURE_LIBRARY]
    assert [i.id for i in fixtures] == ["GLIndFixture1", "GLSafeFixture"]
    ind, safe = fixtures
    measure = _measure(package, "GLIndFixture1")
    assert ind.title == measure["title"] and ind.usage == measure["usage"] and ind.url == measure["url"]
    assert ind.scoring == "proportion" and ind.counted == "" and not ind.count
    assert safe.scoring == "proportion" and safe.counted == "numerator" and safe.count  # a safety proportion
    assert [(c.code, c.definition.name) for c in ind.populations] == [
        ("initial-population", "Initial Population"),
        ("denominator", "Denominator"),
        ("numerator", "Numerator"),
    ]
    assert [(c.code, c.definition.qualified) for c in ind.stratifiers] == [
        ("Age group", f'{FIXTURE_LIBRARY}."Age Group"'),
        ("Administrative sex", f'{FIXTURE_LIBRARY}."Administrative Sex"'),
    ]
    assert 'define "Numerator":' in ind.populations[2].definition.cql
    names = {(d.library, d.name) for d in ind.definitions}
    # The CQL it runs reaches into GLCommon, as the recommendation pages' does (the same age rule).
    assert ("GLCommon", "Is Child") in names and ("GLCommon", "Adult Age") in names
    assert all(lib != "FHIRHelpers" for lib, _ in names)
    assert ind.definitions[0].library == FIXTURE_LIBRARY


def test_indicators_link_the_recommendation_they_measure(site: Site) -> None:
    """Verify that a Measure's relatedArtifact to a recommendation links that recommendation's page."""
    by_id = {i.id: i for i in site.indicators}
    r1 = next(r for r in site.recommendations if r.id == "GLR1InsulinAssessment")
    r2 = next(r for r in site.recommendations if r.id == "GLR2Bromocriptine")
    assert [page for _, page in by_id["GLIndFixture1"].measures] == [r1.page]
    assert [page for _, page in by_id["GLSafeFixture"].measures] == [r2.page]
    assert [s.number for s in by_id["GLSafeFixture"].safety_rules] == [3]
    assert by_id["GLIndFixture1"].other_artifacts == ()


def test_indicator_pages_show_definition_usage_cql_and_links(files: dict[str, bytes], site: Site) -> None:
    """Verify that an indicator page shows the definition, the usage (project's, not source's), CQL and links."""
    ind = next(i for i in site.indicators if i.id == "GLIndFixture1")
    page = files[ind.page].decode("utf-8")
    assert "<h1>GL.IND.X Fixture: insulin assessed &lt;in the period&gt; &amp; more</h1>" in page
    assert "Usage: the project's indicator, not the source's" in page
    assert "An indicator of the project, not of the source guideline" in page  # the Measure's usage
    assert 'href="rec-GLR1InsulinAssessment.html"' in page
    assert "<p>Patients with confirmed GL; the numerator, those with hyperinsulinemia recorded (fixture).</p>" in page
    assert "define &quot;Age Group&quot;:" in page and "define &quot;Is Child&quot;:" in page
    for _, href in ind.json_links:
        assert f'href="{href}"' in page and href in files
    safe = next(i for i in site.indicators if i.id == "GLSafeFixture")
    safe_page = files[safe.page].decode("utf-8")
    assert "SAFETY COUNT, EXPECTED 0" in safe_page and "<b>Rule 3.</b>" in safe_page


def test_index_and_recommendation_pages_list_the_indicators(files: dict[str, bytes], site: Site) -> None:
    """Verify that the index lists every indicator page and a measured recommendation links back to it."""
    index = files["index.html"].decode("utf-8")
    assert '<h2 id="indicators">' in index
    for ind in site.indicators:
        assert f'href="{ind.page}"' in index
    rec = files["rec-GLR1InsulinAssessment.html"].decode("utf-8")
    assert 'href="ind-GLIndFixture1.html"' in rec and 'href="ind-GLSafeFixture.html"' not in rec


def test_indicator_pages_are_semantic_offline_and_linked(files: dict[str, bytes], site: Site) -> None:
    """Verify that with indicator pages the site still passes the site's page and link checks."""
    site_checks.test_pages_are_semantic_and_offline(files, site)
    site_checks.test_internal_links_resolve_in_the_files(files)


@pytest.mark.parametrize(
    ("mutate", "location"),
    [
        (lambda m: m.update(library=[]), "library"),
        (lambda m: m.update(library=["http://example.org/nowhere/Library/X"]), "library"),
        (
            lambda m: m["group"][0]["population"][2]["criteria"].update(expression="No Such Define"),
            "group[0].population[2].criteria",
        ),
        (
            lambda m: m["group"][0]["stratifier"][1]["criteria"].update(language="text/fhirpath"),
            "group[0].stratifier[1].criteria",
        ),
        (lambda m: m.update(group=[{"population": []}]), "group[0].population"),
    ],
)
def test_a_broken_measure_is_a_located_content_error(
    package: Package, cases: list[dict[str, Any]], mutate: Any, location: str
) -> None:
    """Verify that a Measure the site cannot show is a ContentError naming the Measure and where it is wrong."""
    resources = copy.deepcopy(package.resources)
    mutate(next(r for r in resources if r["resourceType"] == "Measure" and r["id"] == "GLIndFixture1"))
    with pytest.raises(ContentError) as e:
        site_model(dataclasses.replace(package, resources=resources), cases)
    [finding] = e.value.findings
    assert (finding.file, finding.location) == ("Measure/GLIndFixture1", location)
