"""The site's fixtures: each test module gives its `package` (the built one, or with fixture Measures added)."""

from __future__ import annotations

from typing import Any

import pytest

from guideline.content.package import Package
from guideline.core.config import Config
from guideline.render.build import load_cases, site_model
from guideline.render.model import Site
from guideline.render.site import site_files


@pytest.fixture(scope="module")
def cases(config: Config) -> list[dict[str, Any]]:
    return load_cases(config.cases_dir)


@pytest.fixture(scope="module")
def site(package: Package, cases: list[dict[str, Any]]) -> Site:
    return site_model(package, cases)


@pytest.fixture(scope="module")
def files(package: Package, cases: list[dict[str, Any]]) -> dict[str, bytes]:
    return site_files(package, cases)
