"""Verify the reference translator and the local ELM engine through the long-lived worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from guideline.content.cql import CACHE_ENV, Engine, compile_cql
from guideline.core import toolchain

HEADER = """library {name} version '1.0.0'
using FHIR version '4.0.1'
include FHIRHelpers version '4.0.1' called FHIRHelpers
"""

VALUES = (
    HEADER.format(name="Values")
    + """codesystem "LOINC": 'http://loinc.org'
code "Insulin": '27873-9' from "LOINC"
parameter "Limit" System.Quantity default 25 'mg/dL'
context Patient
define "IsFemale": Patient.gender = 'female'
define "Age": AgeInYearsAt(@2026-06-01T00:00:00Z)
define "Sum": 2 + 3
define "Half": 1.5
define "Dose": 10 'mg' + 5 'mg'
define "Limit Value": "Limit"
define "Nothing": null as Integer
define "Numbers": {3, 1, 2}
define "Insulin Obs": [Observation: "Insulin"]
define "Latest Insulin": First("Insulin Obs" O sort by FHIRHelpers.ToDateTime(effective as FHIR.dateTime) desc)
define "Latest Insulin Value": "Latest Insulin".value as FHIR.Quantity
define "Has Insulin": exists "Insulin Obs"
"""
)


def _bundle() -> dict[str, Any]:
    def obs(oid: str, when: str, value: float) -> dict[str, Any]:
        return {
            "resourceType": "Observation",
            "id": oid,
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "27873-9"}]},
            "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": when,
            "valueQuantity": {
                "value": value,
                "unit": "u[IU]/mL",
                "system": "http://unitsofmeasure.org",
                "code": "u[IU]/mL",
            },
        }

    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "resource": {
                    "resourceType": "Patient",
                    "id": "p1",
                    "gender": "female",
                    "birthDate": "1990-06-02",
                }
            },
            {"resource": obs("o-new", "2026-05-01T08:00:00Z", 31)},
            {"resource": obs("o-old", "2025-01-01T08:00:00Z", 12)},
        ],
    }


def test_compile_clean_library_gives_elm(engine: Engine) -> None:
    """Verify that a valid library compiles to ELM with no errors and records the translator."""
    res = compile_cql(VALUES, engine=engine)
    assert res.ok, [m.render() for m in res.errors]
    assert res.elm is not None
    assert res.elm["library"]["identifier"] == {"id": "Values", "version": "1.0.0"}
    info = [a for a in res.elm["library"]["annotation"] if a.get("type") == "CqlToElmInfo"]
    assert info and info[0]["translatorVersion"] == engine.versions()["translator"]


def test_syntax_error_is_located(engine: Engine) -> None:
    """Verify that a syntax error comes back with library name, line:col and the translator message."""
    src = HEADER.format(name="Broken") + 'context Patient\ndefine "X": 1 +* 2\n'
    res = compile_cql(src, engine=engine)
    assert not res.ok
    err = res.errors[0]
    assert err.library == "Broken"
    assert (err.line, err.col) == (5, 16)
    assert "Syntax error" in err.message or "extraneous" in err.message or "mismatched" in err.message
    assert err.render().startswith("Broken.cql:5:16: error:")


def test_type_error_is_located(engine: Engine) -> None:
    """Verify that a type error names the operator signature at its exact position."""
    src = HEADER.format(name="Typed") + "context Patient\ndefine \"Bad\": 1 + 'a'\n"
    res = compile_cql(src, engine=engine)
    assert not res.ok
    err = res.errors[0]
    assert (err.library, err.line, err.col) == ("Typed", 5, 15)
    assert err.message == "Could not resolve call to operator Add with signature (System.Integer, System.String)."


def test_error_in_included_library_names_that_library(engine: Engine) -> None:
    """Verify that a broken include is reported against the included library, not the includer."""
    lib_a = "library A version '1.0.0'\ndefine \"Bad\": 1 + 'a'\n"
    lib_b = "library B version '1.0.0'\ninclude A version '1.0.0'\ndefine \"Y\": A.\"Bad\"\n"
    res = compile_cql(lib_b, libraries={"A": lib_a}, engine=engine)
    assert not res.ok
    assert any(m.library == "A" and m.line == 2 for m in res.errors), [m.render() for m in res.messages]


def test_missing_include_is_an_error(engine: Engine) -> None:
    """Verify that including a library that does not exist fails with a located error."""
    src = "library C version '1.0.0'\ninclude NoSuchLib version '1.0.0'\ndefine \"Y\": 1\n"
    res = compile_cql(src, engine=engine)
    assert not res.ok
    assert any("NoSuchLib" in m.message for m in res.errors)
    assert res.errors[0].line == 2


def test_engine_values_and_types(engine: Engine) -> None:
    """Verify booleans, integers, decimals, quantities, lists, nulls and FHIR resources evaluate as expected."""
    res = compile_cql(VALUES, engine=engine)
    helpers = engine.compile(
        "FHIRHelpers", {}, {"options": ["EnableLocators", "EnableResultTypes"], "signatureLevel": "Overloads"}
    )
    assert res.elm and helpers.elm
    engine.load("values", {"Values": res.elm, "FHIRHelpers": helpers.elm})
    out = engine.evaluate("values", "Values", [_bundle()], at="2026-06-01T12:00:00Z")
    row = out["p1"]
    assert row["IsFemale"] is True
    assert row["Age"] == 35  # birthday on 2026-06-02, the day after: still 35
    assert row["Sum"] == 5
    assert row["Half"] == 1.5
    assert row["Dose"] == {"type": "Quantity", "value": 15, "unit": "mg"}
    assert row["Limit Value"] == {"type": "Quantity", "value": 25, "unit": "mg/dL"}
    assert row["Nothing"] is None
    assert row["Numbers"] == [3, 1, 2]
    assert row["Has Insulin"] is True
    assert row["Latest Insulin"]["json"]["id"] == "o-new"
    assert row["Latest Insulin Value"]["json"]["value"] == 31


def test_parameters_override_defaults(engine: Engine) -> None:
    """Verify that a Quantity parameter passed from Python replaces the CQL default."""
    res = compile_cql(VALUES, engine=engine)
    helpers = engine.compile(
        "FHIRHelpers", {}, {"options": ["EnableLocators", "EnableResultTypes"], "signatureLevel": "Overloads"}
    )
    assert res.elm and helpers.elm
    engine.load("values2", {"Values": res.elm, "FHIRHelpers": helpers.elm})
    out = engine.evaluate(
        "values2",
        "Values",
        [_bundle()],
        at="2026-06-01T12:00:00Z",
        parameters={"Limit": {"type": "Quantity", "value": 40, "unit": "mg/dL"}},
    )
    assert out["p1"]["Limit Value"] == {"type": "Quantity", "value": 40, "unit": "mg/dL"}


def test_fhirhelpers_comes_from_the_registry_artifact() -> None:
    """Verify that FHIRHelpers 4.0.1 is the digest-checked file extracted at set-up."""
    text = toolchain.fhirhelpers_text()
    assert "library FHIRHelpers version '4.0.1'" in text


def _counting(eng: Engine) -> list[str]:
    """Record every compile the worker is asked for (the cache's hits never reach it)."""
    asked: list[str] = []
    call = eng._worker.call

    def counted(op: str, raw_json: Any = None, **payload: Any) -> Any:
        if op == "compile":
            asked.append(payload["target"])
        return call(op, raw_json, **payload)

    eng._worker.call = counted  # type: ignore[method-assign]
    return asked


def test_compile_cache_answers_the_same_without_the_translator(tmp_path: Path, monkeypatch: Any) -> None:
    """Verify that a library compiled once is answered from the cache, identically, in a later engine; that a
    changed source or option is compiled again; that an unreadable entry is compiled again; and that `off` keeps
    nothing."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    text = VALUES.replace("Values", "Cached")
    with Engine() as first:
        asked = _counting(first)
        cold = first.compile("Cached", {"Cached": text}, {})
        assert asked == ["Cached"] and cold.ok
    with Engine() as second:
        asked = _counting(second)
        warm = second.compile("Cached", {"Cached": text}, {})
        assert asked == [] and warm == cold
        second.compile("Cached", {"Cached": text + 'define "More": 1\n'}, {})
        second.compile("Cached", {"Cached": text}, {"annotations": True})
        assert asked == ["Cached", "Cached"]
        for entry in (tmp_path / "cache").glob("*.json"):
            entry.write_text("{not json", encoding="utf-8")
        assert second.compile("Cached", {"Cached": text}, {}) == cold and len(asked) == 3
        broken = second.compile("Cached", {"Cached": text + "define Broken: 1 +\n"}, {})
        again = second.compile("Cached", {"Cached": text + "define Broken: 1 +\n"}, {})
        assert not broken.ok and again == broken and len(asked) == 4  # messages are kept with the answer
    monkeypatch.setenv(CACHE_ENV, "off")
    with Engine() as third:
        asked = _counting(third)
        third.compile("Cached", {"Cached": text}, {})
        assert asked == ["Cached"]


def test_compile_cache_on_an_unwritable_folder_only_compiles(tmp_path: Path, monkeypatch: Any) -> None:
    """Verify that a cache folder that cannot be created is no error: every compile goes to the translator."""
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    monkeypatch.setenv(CACHE_ENV, str(blocker / "cache"))
    with Engine() as eng:
        asked = _counting(eng)
        assert eng.compile("Cached", {"Cached": VALUES}, {}).ok
        assert eng.compile("Cached", {"Cached": VALUES}, {}).ok
        assert len(asked) == 2
