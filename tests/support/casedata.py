"""The patient scenarios in tests/cases and the recommendation ids they are written against."""

from __future__ import annotations

from tests.support import CASES_DIR

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
