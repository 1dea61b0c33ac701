"""The patient scenarios in tests/cases, the recommendation ids they are written against, and reading one."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from guideline.remote.patients import days_until, roll_dates
from tests.support import CASES_DIR

T = TypeVar("T")

# Every scenario folder (one with an expected.json), in name order.
CASES = sorted(p for p in CASES_DIR.iterdir() if (p / "expected.json").is_file())
# The pathway's recommendations, in pathway order.
RECOMMENDATIONS = (
    "GLR1InsulinAssessment",
    "GLR2Bromocriptine",
    "GLR3Levocarnitine",
    "GLR4Diet",
    "GLR5CareTeam",
    "GLR6Prognosis",
)
# The project safety rules the pathway declares: 1-9 (issue 13) and those of issue 23 encoded so far.
SAFETY_RULES = [*range(1, 18)]


def read_case(case: Path) -> tuple[dict[str, Any], dict[str, Any], str]:
    """One scenario folder: (its expected.json, its patient Bundle, the Patient's id)."""
    expected: dict[str, Any] = json.loads((case / "expected.json").read_text(encoding="utf-8"))
    bundle: dict[str, Any] = json.loads((case / "patient.json").read_text(encoding="utf-8"))
    pid = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    return expected, bundle, pid


def on_rolled_case(
    at: str, bundle: dict[str, Any], run: Callable[[dict[str, Any], str], T]
) -> tuple[T, dict[str, Any], str]:
    """`run(bundle, time)` on the case moved so `at` is today: (its result, the rolled bundle, the rolled time).

    Run again, once, if the UTC date changed meanwhile (the roll is in whole days), so a case that
    straddles midnight is still judged on one day's data.
    """
    for _ in range(2):
        days = days_until(at)
        rolled = roll_dates(bundle, days, at)
        when = roll_dates({"at": at}, days)["at"]
        result = run(rolled, when)
        if days_until(at) == days:
            break
    return result, rolled, when
