"""Verify the ELM reader on ELM the translator compiled: include aliases, value sets, codes, reach and types."""

from __future__ import annotations

from typing import Any

import pytest

from guideline.content.cql import Engine
from guideline.content.package import Package
from guideline.core import elm
from guideline.core.config import Config
from guideline.evaluation.pushdown import Reads

VS_URL = "http://example.org/fhir/ValueSet/shared-conditions"
LOINC = "http://loinc.org"

# The included library is named Shared but known to its includer as Common: the translator writes
# the alias (`libraryName: "Common"`) on every reference, never the library's name.
SHARED = f"""library Shared version '1.0.0'
using FHIR version '4.0.1'
include FHIRHelpers version '4.0.1' called FHIRHelpers
codesystem "LOINC": '{LOINC}'
valueset "Conditions": '{VS_URL}'
code "Glucose": '2345-7' from "LOINC" display 'Glucose'
parameter "Threshold" Decimal default 5.5
context Patient
define "Has Condition": exists [Condition: "Conditions"]
define "Unused": [Procedure]
"""
USES = """library Uses version '1.0.0'
using FHIR version '4.0.1'
include FHIRHelpers version '4.0.1' called FHIRHelpers
include Shared version '1.0.0' called Common
context Patient
define "Conditions": [Condition: Common."Conditions"]
define "Glucose": [Observation: Common."Glucose"]
define "Flag": Common."Has Condition"
define "Limit": Common."Threshold"
"""


@pytest.fixture(scope="module")
def elms(engine: Engine, config: Config) -> dict[str, dict[str, Any]]:
    out = {}
    for name in ("Shared", "Uses"):
        res = engine.compile(name, {"Shared": SHARED, "Uses": USES}, config.cql_options)
        assert res.ok and res.elm is not None, res.messages
        out[name] = res.elm
    return out


def _statement(elms: dict[str, dict[str, Any]], lib: str, name: str) -> dict[str, Any]:
    (st,) = elm.statements(elms[lib], name)
    return st


def test_an_alias_names_the_included_library(elms: dict[str, dict[str, Any]]) -> None:
    """Verify that a reference through `include Shared called Common` resolves in Shared, not in a library `Common`."""
    ref = _statement(elms, "Uses", "Conditions")["expression"]["codes"]
    assert (ref["type"], ref["libraryName"]) == ("ValueSetRef", "Common")  # what the translator writes
    assert elm.include_aliases(elms["Uses"]) == {"FHIRHelpers": "FHIRHelpers", "Common": "Shared"}
    assert elm.ref_library(elms, "Uses", ref) == "Shared"
    assert elm.value_set_url(elms, "Uses", ref) == VS_URL
    # The alias is the includer's: Shared itself has no include called Common.
    assert elm.ref_library(elms, "Shared", ref) is None
    assert elm.value_set_url(elms, "Shared", ref) is None


def test_data_requirements_filter_on_an_aliased_value_set_and_code(elms: dict[str, dict[str, Any]]) -> None:
    """Verify that retrieves on an included library's value set and code carry those filters, the alias resolved."""
    used = elm.used_statements("Uses", elms)
    reqs = elm.data_requirements(elm.include_closure("Uses", elms), elms, used)
    assert {"type": "Condition", "codeFilter": [{"path": "code", "valueSet": VS_URL}]} in reqs
    glucose = {"type": "Observation", "codeFilter": [{"path": "code", "code": [{"system": LOINC, "code": "2345-7"}]}]}
    assert glucose in reqs
    # Only what Uses reaches of Shared: "Unused" (a Procedure retrieve) is left out.
    assert all(r["type"] != "Procedure" for r in reqs)
    assert sorted(used) == ["Shared", "Uses"]
    assert {s["name"] for s in used["Shared"]} == {"Has Condition"}


def test_the_push_down_reads_an_aliased_value_set(elms: dict[str, dict[str, Any]], config: Config) -> None:
    """Verify that the push-down keeps the members of a value set named through an include alias.

    The Observation retrieve filters `code` by a code declaration: that code is kept; the Procedure
    retrieve has no filter: its whole type is kept.
    """
    members = {VS_URL: {"": [{"system": "http://snomed.info/sct", "code": "1"}]}}
    pkg = Package(config=config, elm=elms, value_sets=members)
    types = Reads.of(pkg).types
    assert types["Condition"] == {"http://snomed.info/sct|1"}
    assert types["Observation"] == {f"{LOINC}|2345-7"}
    assert types["Procedure"] is None


def test_reach_follows_aliases_to_definitions_value_sets_codes_and_parameters(
    elms: dict[str, dict[str, Any]],
) -> None:
    """Verify that what a define uses is found across the include, parameters included, FHIRHelpers left out."""
    got = elm.reached(elms, [("Uses", "Flag"), ("Uses", "Glucose"), ("Uses", "Limit")])
    assert list(got.definitions) == [
        ("Uses", "Flag"),
        ("Uses", "Glucose"),
        ("Uses", "Limit"),
        ("Shared", "Has Condition"),
        ("Shared", "Threshold"),
    ]
    assert list(got.value_sets) == [VS_URL]
    assert list(got.codes) == [("Shared", "Glucose")]
    assert elm.code_def(elms, "Shared", "Glucose") == elm.CodeDef(LOINC, "2345-7", "Glucose")


def test_result_types(elms: dict[str, dict[str, Any]]) -> None:
    """Verify that result types read as FHIR types with cardinality, per define, and where a Decimal sits."""
    assert elm.result_type(_statement(elms, "Uses", "Flag")) == ("boolean", "1")
    assert elm.result_type(_statement(elms, "Uses", "Conditions")) == ("Condition", "*")
    threshold = elm.parameter(elms["Shared"], "Threshold")
    assert threshold is not None and elm.result_type(threshold) == ("decimal", "1")
    types = elm.define_types(elms["Uses"])
    assert types["Flag"] == elm.ELM_BOOLEAN and types["Conditions"] is not None and types["Conditions"].startswith("{")
    assert elm.decimal_paths(_statement(elms, "Uses", "Limit")) == {""}
    assert elm.translator_version(elms["Uses"])


def test_malformed_elm_reads_as_empty() -> None:
    """Verify that ELM of the wrong shape (a carried library is anyone's JSON) gives nothing rather than a crash."""
    for doc in (None, {}, {"library": []}, {"library": {"statements": {"def": "x"}}}, {"library": {"includes": 3}}):
        assert elm.statements(doc) == [] and elm.include_aliases(doc) == {} and elm.define_types(doc) == {}
    assert elm.ref_library({}, "X", {"type": "ExpressionRef", "name": "Y"}) == "X"
    assert elm.locator_lines("3:1-4:20") == (3, 1, 4, 20) and elm.locator_lines(None) is None
