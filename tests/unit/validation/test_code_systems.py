"""Verify the known code systems: the committed HL7 list, the typo distance, OIDs."""

from __future__ import annotations

from pathlib import Path

import pytest

from guideline.validation import code_systems
from guideline.validation.terminology import system_problem
from tools import code_systems as regenerate


def test_hl7_list_matches_the_hapi_validation_resources() -> None:
    """Verify that the committed HL7 code system list is what tools/code_systems.py makes from the jar."""
    jar = Path.home() / ".m2" / "repository" / regenerate.JAR
    if not jar.is_file():
        pytest.fail("run ./scripts/setup: its server build fetches the HAPI validation resources jar this test reads")
    assert regenerate.main(["--check"]) == 0
    assert len(code_systems.hl7_systems()) > 1000


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("abc", "abc", 0),
        ("abc", "abd", 1),
        ("abc", "ab", 1),
        ("abcd", "ab", 2),
        ("abcdef", "ab", None),
        ("kitten", "sitting", None),
        ("cpg-activity-type-csx", "cpg-activity-type-cs", 1),
    ],
)
def test_banded_edit_distance(a: str, b: str, expected: int | None) -> None:
    """Verify that the banded edit distance is exact up to the limit and None beyond it."""
    assert code_systems._within(a, b, 2) == expected


@pytest.mark.parametrize(
    ("system", "severity", "fragment"),
    [
        ("http://loinc.org", None, ""),
        ("http://terminology.hl7.org/CodeSystem/v3-ActCode", None, ""),
        ("http://hl7.org/fhir/uv/cpg/CodeSystem/cpg-activity-type-cs", None, ""),
        ("http://hl7.org/fhir/uv/cpg/CodeSystem/cpg-activity-type-csx", "error", "did you mean"),
        ("http://www.orpha.nett", "error", "did you mean 'http://www.orpha.net'?"),
        ("urn:oid:2.16.840.1.113883.6.88", "warning", "'http://www.nlm.nih.gov/research/umls/rxnorm'"),
        ("urn:oid:1.2.3.4", "warning", "is an OID"),
        ("http://example.net/my-codes", "warning", "unknown code system"),
    ],
)
def test_system_problem(system: str, severity: str | None, fragment: str) -> None:
    """Verify known, typo (error), OID (warning) and unknown (warning) system URIs."""
    prob = system_problem(system)
    if severity is None:
        assert prob is None
    else:
        assert prob is not None and prob[0] == severity and fragment in prob[1], prob


def test_package_own_code_system_is_known() -> None:
    """Verify that a CodeSystem of the package is known, and a typo of it is caught."""
    own = frozenset({"http://example.net/fhir/CodeSystem/gl-flags"})
    assert system_problem("http://example.net/fhir/CodeSystem/gl-flags", own) is None
    prob = system_problem("http://example.net/fhir/CodeSystem/gl-flag", own)
    assert prob is not None and prob[0] == "error" and "gl-flags" in prob[1]
