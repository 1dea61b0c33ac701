"""Verify that the committed Python lock file agrees with the pins in pyproject.toml and the installed venv."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

from tests.support import ROOT


def _lock() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_pyproject_pins_match_the_lock() -> None:
    """Verify that every exact pin in pyproject.toml (runtime and every extra) is the version the lock installs."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    lock = _lock()
    for req in reqs:
        name, _, version = req.partition("==")
        assert version, f"{req}: pyproject pins must be exact"
        assert lock.get(re.sub(r"[-_.]+", "-", name).lower()) == version, f"{req} differs from requirements.lock"


def test_installed_packages_match_the_lock() -> None:
    """Verify that the venv holds exactly the locked versions (set-up honoured the constraints)."""
    lock = _lock()
    for name, version in lock.items():
        assert metadata.version(name) == version, f"{name}: installed {metadata.version(name)}, locked {version}"
