"""The test tiers: which scenarios the default tier runs where the full tier runs them all.

`./scripts/test` (the default tier) runs every scenario through every engine once, but the costly per-channel and
per-database repetitions only on a *covering subset*: scenarios chosen from `tests/cases` so that every
recommendation both fires and does not fire, every activity code is proposed, every resource type the scenarios
carry is present (so every prefetch template returns data) and a medication is referenced, at least once.
`./scripts/test --full` sets GUIDELINE_TEST_TIER=full and runs every scenario everywhere.

The subset is computed from the scenarios' expected.json and patient.json, not listed by hand, so a new
scenario that adds a code or a resource type joins it by itself.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

from tests.support.casedata import CASES, RECOMMENDATIONS

TIERS = ("default", "full")


def tier() -> str:
    """The tier this run is in: GUIDELINE_TEST_TIER (`default` when unset)."""
    value = os.environ.get("GUIDELINE_TEST_TIER", "default") or "default"
    if value not in TIERS:
        raise ValueError(f"GUIDELINE_TEST_TIER must be one of {', '.join(TIERS)}, got {value!r}")
    return value


def is_full() -> bool:
    """True under `./scripts/test --full`."""
    return tier() == "full"


def case_properties(case: Path) -> frozenset[tuple[str, ...]]:
    """What one scenario exercises: each recommendation firing or not, each proposed code, each resource type."""
    expected = json.loads((case / "expected.json").read_text(encoding="utf-8"))
    bundle = json.loads((case / "patient.json").read_text(encoding="utf-8"))
    recs: dict[str, list[str]] = expected["recommendations"]
    props: set[tuple[str, ...]] = {(rec, "fires" if rec in recs else "silent") for rec in RECOMMENDATIONS}
    props |= {("code", rec, code) for rec, codes in recs.items() for code in codes}
    for entry in bundle.get("entry", []):
        resource = entry["resource"]
        props.add(("type", resource["resourceType"]))
        if isinstance(resource.get("medicationReference"), dict):
            props.add(("medication-reference", resource["resourceType"]))
    return frozenset(props)


@cache
def covering_cases() -> tuple[Path, ...]:
    """A small set of scenarios with every property any scenario has (greedy set cover, deterministic)."""
    props = {case: case_properties(case) for case in CASES}
    left = set().union(*props.values())
    chosen: list[Path] = []
    while left:
        # Most new properties first; ties broken by name so the subset is the same on every machine.
        best = min(CASES, key=lambda c: (-len(props[c] & left), c.name))
        chosen.append(best)
        left -= props[best]
    return tuple(sorted(chosen))


def tier_cases() -> list[Path]:
    """The scenarios a per-channel or per-database test runs: all under --full, else the covering subset."""
    return list(CASES) if is_full() else list(covering_cases())


def server_cases() -> list[Path]:
    """The scenarios test_server_cases runs: all of them, except in the default tier's PostgreSQL smoke pass."""
    if is_full() or os.environ.get("GUIDELINE_TEST_DB", "h2") == "h2":
        return list(CASES)
    return list(covering_cases())


def examples(full: int) -> int:
    """A hypothesis test's max_examples: `full` under --full, a fifth of it (at least 10) in the default tier.

    The property tests keep their strategies in both tiers; the default tier runs fewer random examples of them.
    """
    return full if is_full() else max(10, full // 5)
