"""Project configuration: package identity and translator options, read from guideline.toml."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guideline.core.errors import BadInputError

CONFIG_FILE = "guideline.toml"


@dataclass(frozen=True)
class PackageConfig:
    """The [package] table of guideline.toml: identity and release metadata stamped on every artifact."""

    id: str
    name: str
    title: str
    pathway: str
    canonical: str
    version: str
    date: str
    status: str
    experimental: bool
    publisher: str
    contact_url: str
    license: str
    jurisdiction: str


@dataclass(frozen=True)
class Config:
    """The project: its root folder, package metadata, translator options and the FHIR/FHIRHelpers versions."""

    root: Path
    package: PackageConfig
    cql_options: dict[str, Any]
    fhir_version: str
    fhirhelpers_version: str

    @property
    def cql_dir(self) -> Path:
        return self.root / "cql"

    @property
    def resources_dir(self) -> Path:
        return self.root / "fhir_resources"

    @property
    def cases_dir(self) -> Path:
        return self.root / "tests" / "cases"

    def canonical_for(self, resource_type: str, rid: str) -> str:
        """The canonical URL of one of the package's own resources: `{base}/{Type}/{id}`."""
        return f"{self.package.canonical}/{resource_type}/{rid}"


def find_root(start: Path | None = None) -> Path:
    """The project root: the nearest folder upwards holding guideline.toml."""
    here = (start or Path.cwd()).resolve()
    for p in [here, *here.parents]:
        if (p / CONFIG_FILE).is_file():
            return p
    # Fall back to the checkout this package was installed from (editable install).
    pkg_root = Path(__file__).resolve().parents[2]  # guideline/core/config.py -> the checkout
    if (pkg_root / CONFIG_FILE).is_file():
        return pkg_root
    raise BadInputError(f"no {CONFIG_FILE} found in {here} or any parent folder; run from the project checkout")


def load_config(root: Path | None = None) -> Config:
    """Read guideline.toml (and the translator options it names) from the project at or above `root`.

    Every problem is a BadInputError naming the file and what to fix (see README "Configuration").
    """
    root = find_root(root)
    path = root / CONFIG_FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise BadInputError(f"{path}: cannot read project config: {e}") from None
    try:
        pkg = PackageConfig(**data["package"])
        cql = data["cql"]
        opts_path = root / cql["options_file"]
    except (KeyError, TypeError) as e:
        raise BadInputError(f"{path}: missing or unexpected key {e}; see README 'Configuration'") from None
    try:
        options = json.loads(opts_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInputError(f"{opts_path}: cannot read translator options: {e}") from None
    return Config(
        root=root,
        package=pkg,
        cql_options=options,
        fhir_version=cql["fhir_version"],
        fhirhelpers_version=cql["fhirhelpers_version"],
    )
