"""Verify the safety rules on records nobody here wrote: the committed Synthea sample, through both engines.

The sample (tests/data/synthea-sample, its README gives the command) is 40+ Synthea patients with GL added,
trimmed to what the logic reads. Its dates are fixed, so it is evaluated at Synthea's reference date, not today.
Who is a child, insulin-treated, pregnant or deceased is read from the raw records by tools/synthea.py, not by
the engines; the engines' documents are then checked against it.
"""

from __future__ import annotations

import pytest

from tests.support import TESTS
from tools.synthea import Counts, check

SAMPLE = TESTS / "data" / "synthea-sample"
AT = "2026-12-01T12:00:00Z"  # the sample's Synthea reference date (-r/-e 20261201), noon UTC
ENGINES = ("js", "java")


@pytest.fixture(scope="module")
def counts() -> dict[str, Counts]:
    return {c.engine: c for c in check(SAMPLE, AT, ENGINES, workers=2)}


def test_the_sample_is_not_vacuous(counts: dict[str, Counts]) -> None:
    """Verify that every engine evaluated every patient, and the sample holds children and insulin users."""
    for c in counts.values():
        assert c.patients >= 40 and c.evaluated == c.patients and c.with_gl == c.patients
        assert c.children >= 1 and c.insulin_treated >= 1 and c.deceased >= 1, c
    assert counts["js"].fired == counts["java"].fired


def test_the_engines_write_the_same_documents(counts: dict[str, Counts]) -> None:
    """Verify that the local engine and the Java batch evaluator agree on every Synthea patient of the sample."""
    assert counts["java"].unsafe_differs_from_first_engine == 0, counts["java"].violations


@pytest.mark.parametrize("engine", ENGINES)
def test_no_child_gets_the_diet_or_bromocriptine(counts: dict[str, Counts], engine: str) -> None:
    """Verify rule 10 on Synthea's children: no low-calorie diet (R4), no bromocriptine (R2)."""
    c = counts[engine]
    assert (c.unsafe_children_with_diet, c.unsafe_children_with_bromocriptine) == (0, 0), c.violations


@pytest.mark.parametrize("engine", ENGINES)
def test_no_insulin_treated_patient_gets_r1_or_an_insulin_trigger(counts: dict[str, Counts], engine: str) -> None:
    """Verify rules 4 and 12 on Synthea's insulin (RxNorm products, stopped and active requests, 90 days)."""
    c = counts[engine]
    assert (c.unsafe_insulin_treated_with_r1, c.unsafe_insulin_treated_with_insulin_r2) == (0, 0), c.violations


@pytest.mark.parametrize("engine", ENGINES)
def test_no_deceased_patient_gets_a_drug_card(counts: dict[str, Counts], engine: str) -> None:
    """Verify rules 1 and 14 on Synthea's deceased patients."""
    assert counts[engine].unsafe_deceased_with_drug_card == 0, counts[engine].violations


@pytest.mark.parametrize("engine", ENGINES)
def test_no_pregnant_patient_gets_a_drug_card(counts: dict[str, Counts], engine: str) -> None:
    """Verify rules 3 and 13 on Synthea's pregnancies (the sample holds one)."""
    c = counts[engine]
    assert c.pregnant >= 1
    assert c.unsafe_pregnant_with_drug_card == 0, c.violations
