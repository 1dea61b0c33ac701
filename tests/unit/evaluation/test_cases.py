"""Verify that every patient scenario in tests/cases gets exactly its expected recommendations."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from guideline.content.cql import Engine
from guideline.content.package import Package, build_package
from guideline.core.config import Config
from guideline.evaluation.bundles import load_patient_bundle
from guideline.evaluation.patient import ensure_loaded, recommend
from tests.support import SOURCE_TEXT
from tests.support.casedata import CASES, CASES_DIR, RECOMMENDATIONS, SAFETY_RULES

# The source text sits beside the checkout (../shared/source); the quote check needs it.
SOURCE = SOURCE_TEXT


def _expected(case: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((case / "expected.json").read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="session")
def package(config: Config, engine: Engine) -> Package:
    pkg = build_package(config, engine)
    ensure_loaded(pkg, engine)
    return pkg


def _fired(doc: dict[str, Any]) -> dict[str, list[str]]:
    return {r["id"]: sorted(code for a in r["activities"] for code in a["codes"]) for r in doc["recommendations"]}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case: Path, package: Package, engine: Engine) -> None:
    """Verify that the scenario fires exactly the expected recommendations, codes and define values."""
    expected = _expected(case)
    bundle, pid = load_patient_bundle(case / "patient.json")
    doc = recommend(package, bundle, expected["at"], engine)
    assert doc["patient"] == pid
    assert doc["evaluatedAt"] == expected["at"]
    assert _fired(doc) == expected["recommendations"], expected["description"]
    for library, defines in expected["defines"].items():
        values = engine.evaluate(package.key, library, [bundle], expected["at"])[pid]
        got = {name: values.get(name, "<no such define>") for name in defines}
        assert got == defines, f"{library}: {expected['description']}"


def test_output_shape(package: Package, engine: Engine) -> None:
    """Verify that each recommendation entry has exactly the documented keys and types."""
    # A prolactin result, so R2 proposes the drug (project safety rule 11).
    case = CASES_DIR / "r2-prolactin-female-above"
    bundle, _ = load_patient_bundle(case / "patient.json")
    doc = recommend(package, bundle, _expected(case)["at"], engine)
    assert set(doc) == {"patient", "evaluatedAt", "recommendations"}
    for rec in doc["recommendations"]:
        assert set(rec) == {"id", "title", "informational", "source", "activities"}
        assert isinstance(rec["informational"], bool) and rec["source"] and rec["title"]
        for act in rec["activities"]:
            assert set(act) == {"resourceType", "codes"}
    by_id = {r["id"]: r for r in doc["recommendations"]}
    assert by_id["GLR6Prognosis"]["informational"] is True
    assert by_id["GLR2Bromocriptine"]["informational"] is False
    assert [a["resourceType"] for a in by_id["GLR2Bromocriptine"]["activities"]] == ["MedicationRequest"]
    diet = [a["resourceType"] for a in by_id["GLR4Diet"]["activities"]]
    assert diet == ["ServiceRequest", "ServiceRequest", "CommunicationRequest"]  # diet, dietitian (rule 10), advice


@pytest.mark.parametrize(
    ("case", "present", "absent"),
    [
        ("r2-galactorrhoea", ["disappearance of lactorea"], ["content of prolactin", "menstrual cycle"]),
        ("r2-prolactin-male-22", ["normalized the content of prolactin"], ["lactorea", "menstrual cycle"]),
        (
            "r2-amenorrhoea-hyperprolactinaemia",
            ["normalized the content of prolactin", "restoration of a normal menstrual cycle"],
            ["lactorea"],
        ),
        ("r2-insulin-just-above", ["hyperinsulinemia"], ["of prolactin", "lactorea", "menstrual cycle"]),
    ],
)
def test_r2_card_names_only_present_features(
    case: str, present: list[str], absent: list[str], package: Package, engine: Engine
) -> None:
    """Verify that the R2 card detail names the prolactin/lactorrhoea/menstrual effects only when present."""
    bundle, pid = load_patient_bundle(CASES_DIR / case / "patient.json")
    at = _expected(CASES_DIR / case)["at"]
    detail = engine.evaluate(package.key, "GLR2Bromocriptine", [bundle], at)[pid]["Card Detail"]
    assert isinstance(detail, str)
    for text in present:
        assert text in detail
    for text in absent:
        assert text not in detail


def test_cases_cover_every_recommendation() -> None:
    """Verify that there are at least 24 scenarios and each recommendation fires in one and not in another."""
    assert len(CASES) >= 24
    expectations = [_expected(c) for c in CASES]
    for rec in RECOMMENDATIONS:
        assert any(rec in e["recommendations"] for e in expectations), f"no positive case for {rec}"
        assert any(rec not in e["recommendations"] for e in expectations), f"no negative case for {rec}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_files_are_well_formed(case: Path) -> None:
    """Verify that each scenario pins an evaluation time with offset and holds exactly one Patient."""
    expected = _expected(case)
    assert set(expected) == {"description", "at", "defines", "recommendations"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", expected["at"])
    for rec, codes in expected["recommendations"].items():
        assert rec in RECOMMENDATIONS and codes == sorted(codes)
    bundle = json.loads((case / "patient.json").read_text(encoding="utf-8"))
    patients = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    assert len(patients) == 1 and patients[0]["resource"]["id"] == case.name


def test_quotes_are_verbatim(package: Package) -> None:
    """Verify that every quote in a PlanDefinition action's documentation is a verbatim span of the source."""
    assert SOURCE.is_file(), f"the clinical source must sit beside the checkout at {SOURCE}"
    # The source wraps one paragraph mid-quote; compare with whitespace collapsed.
    source = " ".join(SOURCE.read_text(encoding="utf-8").split())
    quotes: list[str] = []
    for r in package.resources:
        if r["resourceType"] != "PlanDefinition":
            continue
        stack = list(r.get("action", []))
        while stack:
            a = stack.pop()
            quotes += [d["citation"] for d in a.get("documentation", []) if "citation" in d]
            stack += a.get("action", [])
    assert quotes
    for q in quotes:
        assert " ".join(q.split()) in source, q


def test_value_set_expansions_match_compose(package: Package) -> None:
    """Verify that each hand-written expansion lists exactly the codes its compose enumerates."""
    for r in package.resources:
        if r["resourceType"] != "ValueSet":
            continue
        composed = {(inc["system"], c["code"]) for inc in r["compose"]["include"] for c in inc.get("concept", [])}
        expanded = {(c["system"], c["code"]) for c in r["expansion"]["contains"]}
        assert composed == expanded, r["id"]
        assert r["expansion"]["total"] == len(expanded)


def test_orphanet_codes_in_both_forms(package: Package) -> None:
    """Verify that the GL value set matches Orphanet codes written '528' and 'ORPHA:528' (and 79086)."""
    vs = package.value_sets[f"{package.config.package.canonical}/ValueSet/gl-conditions"]
    codes = {(c["system"], c["code"]) for version in vs.values() for c in version}
    for code in ("528", "ORPHA:528", "79086", "ORPHA:79086"):
        assert ("http://www.orpha.net", code) in codes


@pytest.mark.parametrize(
    ("case", "library", "present", "absent"),
    [
        ("safety9-tg-1000-oil-caution", "GLR4Diet", ["medium-chain", "dietitian", "specialist review"], []),
        # Rule 17 moved rule 9's threshold from 1,000 to 500 mg/dL: 999 now cautions, 499 does not.
        ("safety9-tg-999-no-caution", "GLR4Diet", ["medium-chain", "dietitian", "specialist review"], []),
        ("safety17-tg-499-no-caution", "GLR4Diet", ["medium-chain", "dietitian"], ["specialist review"]),
        ("safety17-tg-500-caution", "GLR4Diet", ["triglycerides result in the lab lookback", "specialist review"], []),
        (
            "safety17-pancreatitis-resolved",
            "GLR4Diet",
            ["history of pancreatitis", "specialist review"],
            ["triglycerides result in the lab lookback"],
        ),
        (
            "r2-galactorrhoea",
            "GLR2Bromocriptine",
            [
                "Strength: weak; certainty: very low (the source grades nothing)",
                "off-label",
                "no licensed dose",
                "metreleptin",
                "FDA: Myalept, February 2014; EMA: Myalepta, 2018",
                "glucose- and lipid-lowering treatment",
                "coronary or other cardiovascular disease",
                "fibrotic disorders and heart-valve disease (echocardiography before long-term use)",
                "serious psychiatric illness",
                "ovulation may return",
            ],
            ["dose per prescriber and product label"],
        ),
        ("r2-insulin-just-above", "GLR2Bromocriptine", ["uncontrolled hypertension", "ergot", "post-partum"], []),
        ("safety3-breastfeeding-prolactin", "GLR1InsulinAssessment", ["breast-feeding"], []),
        ("gl-adult-no-data", "GLR1InsulinAssessment", [], ["breast-feeding", "suspected"]),
        ("safety2-unconfirmed-no-data", "GLR5CareTeam", ["suspected"], []),
        ("safety16-gl-local-verification-status", "GLR1InsulinAssessment", ["not confirmed"], []),
        (
            "safety10-day-before-18th-birthday",
            "GLR2Bromocriptine",
            ["no drug is proposed", "paediatric endocrinologist's decision"],
            ["Consider bromocriptine", "dose per prescriber"],
        ),
        # Aged 18 without a prolactin result: the adult's text, with rule 11's work-up in place of the drug.
        (
            "safety10-18th-birthday",
            "GLR2Bromocriptine",
            ["considered only once the work-up is done"],
            ["paediatric endocrinologist", "Consider bromocriptine"],
        ),
        (
            "safety11-prolactin-absent",
            "GLR2Bromocriptine",
            ["confirm hyperprolactinaemia", "exclude hypothyroidism", "pregnancy test (hCG) to exclude pregnancy"],
            ["Consider bromocriptine", "dose per prescriber"],
        ),
        ("safety11-male-no-pregnancy-test", "GLR2Bromocriptine", ["exclude hypothyroidism"], ["pregnancy test"]),
        ("safety11-prolactin-normal-present", "GLR2Bromocriptine", ["Consider bromocriptine"], ["work-up"]),
        (
            "safety11-child-prolactin-present",
            "GLR2Bromocriptine",
            ["paediatric endocrinologist's decision"],
            ["Consider bromocriptine", "work-up"],
        ),
        (
            "safety10-day-before-18th-birthday",
            "GLR4Diet",
            ["The source states", "adequate for growth", "paediatric dietitian", "referral to a dietitian is proposed"],
            [],
        ),
        ("safety10-18th-birthday", "GLR4Diet", ["referral to a dietitian is proposed"], ["adequate for growth"]),
        ("safety10-adult-dietitian-referral-active", "GLR4Diet", ["not proposed again"], ["is proposed (project"]),
        ("safety10-day-before-18th-birthday", "GLR5CareTeam", ["paediatric endocrinologist"], []),
        ("safety8-endo-referral-active-11-months", "GLR5CareTeam", ["not proposed again"], []),
        (
            "safety3-pregnant-hyperinsulinemia",
            "GLR6Prognosis",
            ["pregnancy and childbirth", "CONTEXT, NOT FROM THE SOURCE"],
            [],
        ),
        ("gl-adult-no-data", "GLR6Prognosis", ["national", "PMC6760298"], ["project note)"]),
    ],
)
def test_card_detail_safety_texts(
    case: str, library: str, present: list[str], absent: list[str], package: Package, engine: Engine
) -> None:
    """Verify that the card texts carry the project safety notes (rules 3, 9, 10 and 16) exactly when they apply."""
    bundle, pid = load_patient_bundle(CASES_DIR / case / "patient.json")
    at = _expected(CASES_DIR / case)["at"]
    detail = engine.evaluate(package.key, library, [bundle], at)[pid]["Card Detail"]
    assert isinstance(detail, str)
    for text in present:
        assert text in detail, text
    for text in absent:
        assert text not in detail, text


@pytest.mark.parametrize(
    ("case", "drug_in_title"),
    [
        ("safety11-prolactin-normal-present", True),
        ("safety11-prolactin-absent", False),
        ("safety11-female-12", False),
        ("safety11-child-prolactin-present", False),
        ("safety10-day-before-18th-birthday", False),
    ],
)
def test_r2_title_names_the_drug_only_when_proposed(
    case: str, drug_in_title: bool, package: Package, engine: Engine
) -> None:
    """Verify that R2's card title names bromocriptine only when the card proposes it (project safety rules 10
    and 11): never for a child, never for the work-up."""
    bundle, _ = load_patient_bundle(CASES_DIR / case / "patient.json")
    doc = recommend(package, bundle, _expected(CASES_DIR / case)["at"], engine)
    (r2,) = [r for r in doc["recommendations"] if r["id"] == "GLR2Bromocriptine"]
    assert ("bromocriptine" in r2["title"].lower()) is drug_in_title, r2["title"]
    proposes = any(a["resourceType"] == "MedicationRequest" for a in r2["activities"])
    assert proposes is drug_in_title


@pytest.mark.parametrize(
    ("case", "diet_in_title"),
    [
        ("safety10-day-before-18th-birthday", False),
        ("safety10-18th-birthday", True),
        ("r5-child", False),
    ],
)
def test_r4_title_names_the_low_calorie_diet_only_when_proposed(
    case: str, diet_in_title: bool, package: Package, engine: Engine
) -> None:
    """Verify that R4's card title heads with the low-calorie diet only when the card proposes it (project safety
    rules 10 and 17): a child's card is titled by the paediatric dietitian's plan."""
    bundle, _ = load_patient_bundle(CASES_DIR / case / "patient.json")
    doc = recommend(package, bundle, _expected(CASES_DIR / case)["at"], engine)
    (r4,) = [r for r in doc["recommendations"] if r["id"] == "GLR4Diet"]
    assert r4["title"].lower().startswith("low-calorie diet") is diet_in_title, r4["title"]
    assert "short-chain" not in r4["title"].lower()
    low_calorie = "http://snomed.info/sct|182956005"  # ActivityDefinition GLOrderLowCalorieDiet
    proposes = any(low_calorie in a["codes"] for a in r4["activities"])
    assert proposes is diet_in_title


def _plan(package: Package, pid: str) -> dict[str, Any]:
    return next(r for r in package.resources if r["resourceType"] == "PlanDefinition" and r["id"] == pid)


def test_drug_cards_state_evidence_and_alternatives(package: Package) -> None:
    """Verify that both drug cards' texts state the rating, the off-label use and metreleptin (rule 17), and that
    the metreleptin approvals are cited as labelled context with a url, never as the source."""
    for pid in ("GLR2Bromocriptine", "GLR3Levocarnitine"):
        plan = _plan(package, pid)
        text = plan["action"][0]["description"]
        for phrase in (
            "Strength: weak; certainty: very low (the source grades nothing)",
            "off-label",
            "no licensed dose",
            "metreleptin",
            "glucose- and lipid-lowering treatment",
            "project safety rule 17",
        ):
            assert phrase in text, (pid, phrase)
        context = {a["label"]: a for a in plan["relatedArtifact"] if str(a.get("label", "")).startswith("context-")}
        assert set(context) == {"context-metreleptin-fda", "context-metreleptin-ema"}, pid
        for a in context.values():
            assert a["type"] == "documentation" and a["url"].startswith("https://")
            assert a["display"].startswith("CONTEXT, NOT FROM THE SOURCE") and "Checked 2026-" in a["citation"]
    checks = _plan(package, "GLR2Bromocriptine")["action"][0]["description"]
    for phrase in ("echocardiography before long-term use", "serious psychiatric illness", "ovulation may return"):
        assert phrase in checks


def test_diet_title_does_not_state_the_source_chemistry(package: Package) -> None:
    """Verify that R4's titles name the source's oils without calling them short-chain (rule 17), while the
    source's sentence stays quoted as the source's."""
    plan = _plan(package, "GLR4Diet")
    for title in (plan["title"], plan["action"][0]["title"]):
        assert "short-chain" not in title.lower(), title
    quotes = [d["citation"] for d in plan["action"][0]["documentation"]]
    assert any("short-chain fatty acid residues" in q for q in quotes)


def test_project_safety_rules_are_marked_apart_from_the_source(package: Package) -> None:
    """Verify that every project safety rule is a labelled documentation artifact, never a source citation or quote."""
    labels: dict[str, set[str]] = {}
    for r in package.resources:
        if r["resourceType"] != "PlanDefinition":
            continue
        for a in r.get("relatedArtifact", []):
            label = str(a.get("label", ""))
            if label.startswith("project-safety-rule-"):
                assert a["type"] == "documentation", (r["id"], label)
                assert a["display"].startswith("Project safety rule ") and "(not from the source)" in a["display"]
                assert a["citation"].startswith("Basis: ")
                labels.setdefault(r["id"], set()).add(label)
        assert "PROJECT SAFETY RULES" in r.get("usage", ""), r["id"]
    assert labels["GLPathway"] == {f"project-safety-rule-{n}" for n in SAFETY_RULES}
    # Every rule a recommendation carries is also listed on the pathway.
    for rules in labels.values():
        assert rules <= labels["GLPathway"]
