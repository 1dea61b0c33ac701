"""Local evaluation of the pathway for one patient: which recommendations fire and what they propose."""

from __future__ import annotations

import weakref
from typing import Any

from guideline.content.cql import Engine
from guideline.content.package import Package
from guideline.core.evaltime import time_parameters
from guideline.evaluation.bundles import patient_id
from guideline.evaluation.model import Recommendation, document
from guideline.evaluation.walk import walk_pathways

# Which package each engine already holds (keyed by the package's content hash), so a test
# session or a loop over patients sends the ~1 MB of ELM to the worker once.
_loaded: weakref.WeakKeyDictionary[Engine, set[str]] = weakref.WeakKeyDictionary()


def ensure_loaded(pkg: Package, engine: Engine) -> None:
    """Load the package's ELM and value sets into the engine's worker, unless it holds them already."""
    keys = _loaded.setdefault(engine, set())
    if pkg.key not in keys:
        engine.load(pkg.key, pkg.elm, pkg.value_sets)
        keys.add(pkg.key)


def evaluate(pkg: Package, bundle: dict[str, Any], at: str, engine: Engine) -> list[Recommendation]:
    """The recommendations that fire for the one patient in `bundle` at `at`, in pathway order.

    A pathway that reaches itself through its actions raises ContentError at the reference that
    closes the loop (as soon as the walk gets there).
    """
    ensure_loaded(pkg, engine)
    key = pkg.key

    def fetch(library: str) -> dict[str, Any]:
        by_patient = engine.evaluate(key, library, [bundle], at, time_parameters(at))
        # One patient per bundle, so exactly one row.
        return next(iter(by_patient.values()), {})

    return walk_pathways(pkg, fetch)


def recommend(pkg: Package, bundle: dict[str, Any], at: str, engine: Engine) -> dict[str, Any]:
    """The `guideline recommend --json` document for the one Patient in `bundle` at `at`."""
    pid = patient_id(bundle)
    return document(pid, at, evaluate(pkg, bundle, at, engine))
