"""Fixture indicators for the render tests: Measures, summary MeasureReports and a CQL library (tests/data/indicators).

The package has no Measures of its own yet; these stand in for them so the site's indicator pages and
the offline report are tested now. The fixture files write the package canonical and version as
`{canonical}` and `{version}`, filled in from the project configuration.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
from typing import Any

from guideline.content.cql import Engine
from guideline.content.package import Package
from guideline.core.config import Config
from tests.support import TESTS

INDICATORS = TESTS / "data" / "indicators"
FIXTURE_LIBRARY = "GLIndFixture"


def _filled(text: str, config: Config) -> Any:
    pkg = config.package
    return json.loads(text.replace("{canonical}", pkg.canonical).replace("{version}", pkg.version))


def fixture_measures(config: Config) -> list[dict[str, Any]]:
    """The fixture Measures, canonicals filled in."""
    return [_filled(p.read_text(encoding="utf-8"), config) for p in sorted(INDICATORS.glob("measure-*.json"))]


def fixture_reports(config: Config) -> list[dict[str, Any]]:
    """The fixture summary MeasureReports: a proportion with an empty stratum, a non-zero count, an empty proportion."""
    reports: list[dict[str, Any]] = _filled((INDICATORS / "reports.json").read_text(encoding="utf-8"), config)
    return reports


def with_fixture_measures(package: Package, engine: Engine) -> Package:
    """The package plus the fixture Library (compiled against the package's GLCommon) and Measures."""
    cfg = package.config
    text = (INDICATORS / f"{FIXTURE_LIBRARY}.cql").read_text(encoding="utf-8")
    common = (cfg.cql_dir / "GLCommon.cql").read_text(encoding="utf-8")
    result = engine.compile(FIXTURE_LIBRARY, {"GLCommon": common, FIXTURE_LIBRARY: text}, cfg.cql_options)
    if not result.ok or result.elm is None:
        raise AssertionError("the fixture CQL does not compile: " + "; ".join(m.render() for m in result.errors))
    library = {
        "resourceType": "Library",
        "id": FIXTURE_LIBRARY,
        "url": f"{cfg.package.canonical}/Library/{FIXTURE_LIBRARY}",
        "version": cfg.package.version,
        "name": FIXTURE_LIBRARY,
        "title": "GL indicator fixture library",
        "status": "draft",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/library-type", "code": "logic-library"}]},
        "content": [{"contentType": "text/cql", "data": base64.b64encode(text.encode("utf-8")).decode("ascii")}],
    }
    resources = [*copy.deepcopy(package.resources), library, *fixture_measures(cfg)]
    return dataclasses.replace(package, resources=resources, elm={**package.elm, FIXTURE_LIBRARY: result.elm})
