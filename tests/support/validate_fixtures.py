"""Helpers for the validate tests: a copy of the small valid fixture project, edited per test."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from guideline.content.cql import Engine
from guideline.core.config import load_config
from guideline.core.errors import Finding
from guideline.validation.report import ValidationReport
from guideline.validation.run import validate
from tests.support import BAD_INPUTS

FIXTURE = BAD_INPUTS / "fixture"
FILES = BAD_INPUTS / "files"

PD = "fhir_resources/plandefinition/plandefinition-FxRec01.json"
AD = "fhir_resources/activitydefinition/activitydefinition-FxDiet.json"
LIB_COMMON = "fhir_resources/library/library-FxCommon.json"
LIB_REC = "fhir_resources/library/library-FxRec01.json"
VS_COND = "fhir_resources/valueset/valueset-fx-conditions.json"
VS_DIET = "fhir_resources/valueset/valueset-fx-diets.json"
CQL_COMMON = "cql/FxCommon.cql"
CQL_REC = "cql/FxRec01.cql"


def copy_fixture(dest: Path) -> Path:
    """A fresh, writable copy of the valid fixture project under `dest`; returns its root."""
    root = dest / "project"
    shutil.copytree(FIXTURE, root)
    return root


def edit_json(root: Path, rel: str, fn: Callable[[dict[str, Any]], Any]) -> None:
    """Apply `fn` to the parsed JSON of root/rel (in place) and write it back."""
    path = root / rel
    data = json.loads(path.read_text(encoding="utf-8"))
    fn(data)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def edit_text(root: Path, rel: str, old: str, new: str) -> None:
    path = root / rel
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {rel}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def run(root: Path, engine: Engine, path: Path | None = None) -> ValidationReport:
    """Validate the project at root (its sources, or `path` inside or outside it)."""
    if path is None:
        return validate(cfg=load_config(root), engine=engine)
    return validate(path, engine=engine)


def build_dist(root: Path, engine: Engine) -> Path:
    """Build the project at root into root/dist; returns the dist folder."""
    from guideline.content.outputs import build

    return build(root / "dist", cfg=load_config(root), engine=engine).out_dir


def describe(findings: list[Finding]) -> str:
    return "\n".join(f"  {f.severity} {f.file} | {f.location} | {f.message} [{f.layer}]" for f in findings)
