"""The push-down (pushdown.py): what the logic reads, and the same results with and without it on every reader."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from guideline.content.cql import Engine
from guideline.content.package import Package, build_package
from guideline.core import elm
from guideline.core.config import Config
from guideline.evaluation import spark
from guideline.evaluation.bulk import patient_key
from guideline.evaluation.bundles import load_patient_bundle
from guideline.evaluation.jvm import JavaPool
from guideline.evaluation.population import evaluate_opened
from guideline.evaluation.pushdown import Reads
from guideline.evaluation.records import open_population
from tests.support.casedata import CASES
from tools.synth import write_population

AT = "2026-06-01T12:00:00Z"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
# Another population folder to prove equal on (a Bulk export or an NDJSON file), e.g. a Synthea sample.
SAMPLE_ENV = "GUIDELINE_PUSHDOWN_POPULATION"
# The committed Synthea sample (trimmed to what the logic reads, so mostly the code filters are at work there).
SYNTHEA_SAMPLE = Path(__file__).resolve().parents[2] / "data" / "synthea-sample"
# The JVM reader's test data: the spec Python sends for LOINC_1 and the raw lines both readers must drop alike.
JVM_TEST_DATA = (
    Path(__file__).resolve().parents[3] / "batch" / "src" / "test" / "resources" / "org" / "example" / "gl" / "batch"
)
LOINC_1 = [
    {"type": "Condition"},
    {"type": "Observation", "codeFilter": [{"path": "code", "code": [{"system": LOINC, "code": "1"}]}]},
]


@pytest.fixture(scope="module")
def package(config: Config, engine: Engine) -> Package:
    return build_package(config, engine)


@pytest.fixture(scope="module")
def pools(config: Config, package: Package) -> Iterator[dict[str, JavaPool]]:
    """Two JVMs: with the push-down (the default) and without (--read-all)."""
    with JavaPool(config, 2) as on, JavaPool(config, 2, read_all=True) as off:
        on.load(package)
        off.load(package)
        yield {"push-down": on, "read-all": off}


# ---------------------------------------------------------------- what the package reads


def test_the_package_reads_its_retrieves_types_and_codes(package: Package) -> None:
    """Verify the decision for this package: types never retrieved are not read, code-filtered ones by code."""
    reads = Reads.of(package)
    assert "Claim" not in reads.types and "Encounter" not in reads.types
    # Pregnancy and pancreatitis by ICD-10 prefix (project safety rules 13 and 17) retrieve every Condition.
    assert reads.types["Condition"] is None
    referrals = reads.types["ServiceRequest"]
    assert referrals is not None and f"{SNOMED}|103699006" in referrals
    hba1c = reads.types["Observation"]
    assert hba1c is not None and f"{LOINC}|4548-4" in hba1c and f"{LOINC}|8867-4" not in hba1c
    # [Medication] and [MedicationRequest] (filtered on medication[x] in the query, not the retrieve): whole types.
    assert reads.types["Medication"] is None and reads.types["MedicationRequest"] is None
    spec = reads.spec()
    assert spec is not None and spec["types"]["Medication"] is None and "Claim" not in spec["types"]
    assert Reads.all().spec() is None


def test_raw_lines_of_types_never_read_are_skipped() -> None:
    """Verify `skips`: only a line that starts with a type no retrieve reads; the Patient and Bundles never."""
    reads = Reads.of_requirements([{"type": "Condition"}], {})
    assert reads.skips(b'{"resourceType":"Claim","patient":{"reference":"Patient/p"}}\n')
    assert reads.skips(b'  { "resourceType" : "Encounter"}')
    assert not reads.skips(b'{"resourceType":"Condition"}')
    assert not reads.skips(b'{"resourceType":"Patient","id":"p"}')
    assert not reads.skips(b'{"resourceType":"Bundle"}')
    # Unsure: another key first (a contained resource's type could come first), or not a resource at all.
    assert not reads.skips(b'{"id":"c","resourceType":"Claim"}')
    assert not reads.skips(b"{broken")
    assert not Reads.all().skips(b'{"resourceType":"Claim"}')


def test_resources_of_code_filtered_types_are_kept_by_their_code() -> None:
    """Verify `keeps`: a coding of `code` in the filter's value set (or codes) keeps it; unfiltered types whole."""
    vs = "http://example.org/vs"
    reqs = [
        {"type": "Observation", "codeFilter": [{"path": "code", "valueSet": vs}]},
        {"type": "Observation", "codeFilter": [{"path": "code", "code": [{"system": LOINC, "code": "2"}]}]},
        {"type": "MedicationRequest", "codeFilter": [{"path": "medication", "valueSet": vs}]},
        {"type": "Procedure", "codeFilter": [{"path": "code", "valueSet": "http://example.org/not-in-package"}]},
    ]
    reads = Reads.of_requirements(reqs, {vs: {"": [{"system": LOINC, "code": "1"}]}})

    def obs(*codes: tuple[str, str]) -> dict[str, Any]:
        return {"resourceType": "Observation", "code": {"coding": [{"system": s, "code": c} for s, c in codes]}}

    assert reads.keeps(obs((LOINC, "1"))) and reads.keeps(obs((LOINC, "9"), (LOINC, "2")))
    assert not reads.keeps(obs((LOINC, "9"))) and not reads.keeps(obs(("http://other", "1")))
    assert not reads.keeps({"resourceType": "Observation"}) and not reads.keeps({"resourceType": "Claim"})
    assert reads.keeps({"resourceType": "MedicationRequest"})  # filtered on medication[x]: the whole type
    assert reads.keeps({"resourceType": "Procedure"})  # no expansion to check against: the whole type
    assert reads.keeps({"resourceType": "Patient"}) and Reads.all().keeps(obs((LOINC, "9")))
    # Another retrieve of the type without a filter keeps the whole type, in either order.
    assert Reads.of_requirements([*reqs, {"type": "Observation"}], {}).types["Observation"] is None
    assert Reads.of_requirements([{"type": "Observation"}, *reqs], {}).types["Observation"] is None


def test_a_code_filter_with_a_computed_code_is_no_filter() -> None:
    """Verify that a retrieve whose code list holds anything but code declarations reads its whole type.

    A partial list would drop resources the retrieve returns (prefetch and the push-down trust the filter).
    """
    retrieve = {
        "type": "Retrieve",
        "dataType": "{http://hl7.org/fhir}Observation",
        "codeProperty": "code",
        "codes": {"type": "ToList", "operand": {"type": "ExpressionRef", "name": "Computed"}},
    }
    doc = {"library": {"identifier": {"id": "L"}, "statements": {"def": [{"name": "X", "expression": retrieve}]}}}
    assert elm.data_requirements(["L"], {"L": doc}) == [{"type": "Observation"}]


def test_raw_lines_without_a_kept_code_are_dropped_unparsed_when_their_patient_is_certain() -> None:
    """Verify `drops` on the cases the JVM's test checks too (escapes, codes elsewhere, whitespace, display
    first, no subject, nesting, ...): each gives the patient `patient_key` finds on the parsed resource, which
    `keeps` refuses, or None (parse it); and the JVM is sent exactly the spec its test reads."""
    reads = Reads.of_requirements(LOINC_1, {})
    assert reads.spec() == json.loads((JVM_TEST_DATA / "reads.json").read_text(encoding="utf-8"))
    cases = json.loads((JVM_TEST_DATA / "raw-drops.json").read_text(encoding="utf-8"))
    assert {c["patient"] for c in cases} >= {None, "p1", "p2"}
    for case in cases:
        line = case["line"].encode()
        assert reads.drops(line) == case["patient"], case["why"]
        if case["patient"] is not None:
            assert reads.screen(line) == case["patient"] and not reads.skips(line)
            try:
                resource = json.loads(line)
            except ValueError:
                continue  # a broken line: dropped unreported (module docstring)
            assert not reads.keeps(resource) and patient_key(resource) == case["patient"], case["why"]
    assert reads.screen(b'{"resourceType":"Claim"}') is True and reads.screen(b'{"resourceType":"Condition"}') is None
    line = b'{"resourceType":"Observation","code":{"coding":[{"code":"2"}]},"subject":{"reference":"Patient/p"}}'
    assert Reads.all().drops(line) is None and Reads.of_requirements([{"type": "Observation"}], {}).drops(line) is None


def test_a_code_with_other_characters_is_found_in_both_engines_spelling() -> None:
    """Verify that a code's bytes other than letters and digits are matched literally (`\\xHH`, not as regex)."""
    reads = Reads.of_requirements(
        [{"type": "Observation", "codeFilter": [{"path": "code", "code": [{"system": "s|x", "code": "a.b|é"}]}]}], {}
    )
    head = '{"resourceType":"Observation","subject":{"reference":"Patient/p"},"code":{"coding":[{"code":"'
    assert reads.drops(f'{head}a.b|é"}}]}}}}'.encode()) is None  # the code, kept: parsed
    assert reads.drops(f'{head}axb|é"}}]}}}}'.encode()) == "p"  # `.` is no wildcard
    # A `|` in the system makes every text after a `|` a candidate code: a superset, parsed, never dropped.
    assert reads.drops(f'{head}x|a.b|é"}}]}}}}'.encode()) is None and reads.drops(f'{head}é"}}]}}}}'.encode()) is None
    spec = reads.spec()
    assert spec is not None and "\\xc3\\xa9" in spec["drop"]["codes"]["Observation"]


# ---------------------------------------------------------------- the same results, with and without


def _results(pkg: Package, pool: JavaPool, path: Path, *, push_down: bool) -> list[tuple[Any, ...]]:
    """Every record's place, patient, error and document line, as `recommend --population` writes them."""
    want = (lambda: Reads.of(pkg)) if push_down else None
    with open_population(path, want) as population:
        return [
            (r.record.where, r.record.patient, r.error, r.line or (json.dumps(r.document) if r.document else None))
            for r in evaluate_opened(pkg, population, AT, pool)
        ]


def assert_same_results(pkg: Package, pools: dict[str, JavaPool], path: Path) -> int:
    """Assert that a population gives the same records with and without the push-down; how many fired."""
    on = _results(pkg, pools["push-down"], path, push_down=True)
    off = _results(pkg, pools["read-all"], path, push_down=False)
    assert len(on) == len(off) > 0
    for a, b in zip(on, off, strict=True):
        assert a == b
    return sum('"recommendations":[]' not in (r[3] or '"recommendations":[]') for r in on)


def _case_resources() -> Iterator[list[dict[str, Any]]]:
    for case in CASES:
        bundle, _ = load_patient_bundle(case / "patient.json")
        yield [e["resource"] for e in bundle.get("entry", []) if isinstance(e.get("resource"), dict)]


@pytest.mark.parametrize("fmt", ["ndjson", "bulk"])
def test_every_scenario_as_a_population_gives_the_same_results(
    package: Package, pools: dict[str, JavaPool], tmp_path: Path, fmt: str
) -> None:
    """Verify equality on every scenario of tests/cases: as one grouped NDJSON file (read by the JVM) and as a
    Bulk export (grouped by Python, walked by the JVM)."""
    path = tmp_path / ("cases.ndjson" if fmt == "ndjson" else "cases")
    write_population(path, _case_resources(), fmt)
    assert assert_same_results(package, pools, path) > 0


def synthea_like(folder: Path) -> Path:
    """A small Bulk export shaped as Synthea writes one: mostly what the logic never reads, shared resources apart.

    Four patients, each with a GL Condition, an HbA1c and a heart rate, insulin ordered by code and through a
    shared Medication, Claims, ExplanationOfBenefits, Encounters and DiagnosticReports; Organizations and
    Locations without a patient.
    """
    lines: dict[str, list[dict[str, Any]]] = {}

    def add(res: dict[str, Any]) -> None:
        lines.setdefault(res["resourceType"], []).append(res)

    def coded(system: str, code: str, display: str) -> dict[str, Any]:
        return {"coding": [{"system": system, "code": code, "display": display}], "text": display}

    add({"resourceType": "Organization", "id": "org-1", "name": "Clinic"})
    add({"resourceType": "Location", "id": "loc-1", "managingOrganization": {"reference": "Organization/org-1"}})
    for i in range(4):
        pid = f"5a1e{i:04d}-0000-4000-8000-000000000000"
        subject = {"reference": f"Patient/{pid}"}
        add({"resourceType": "Patient", "id": pid, "gender": "female" if i % 2 else "male", "birthDate": "1990-02-03"})
        add({"resourceType": "Encounter", "id": f"enc-{i}", "status": "finished", "subject": subject})
        add(
            {
                "resourceType": "Condition",
                "id": f"gl-{i}",
                "clinicalStatus": coded("http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active"),
                "verificationStatus": coded(
                    "http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed", "Confirmed"
                ),
                "code": coded(SNOMED, "284449005", "Congenital total lipodystrophy"),
                "subject": subject,
            }
        )
        add(
            {
                "resourceType": "Condition",
                "id": f"sin-{i}",
                "code": coded(SNOMED, "444814009", "Sinusitis"),
                "subject": subject,
            }
        )
        for code, display, value, unit in (("4548-4", "HbA1c", 7.5 + i, "%"), ("8867-4", "Heart rate", 70, "/min")):
            add(
                {
                    "resourceType": "Observation",
                    "id": f"obs-{code}-{i}",
                    "status": "final",
                    "code": coded(LOINC, code, display),
                    "subject": subject,
                    "effectiveDateTime": "2026-05-01T09:00:00Z",
                    "valueQuantity": {
                        "value": value,
                        "unit": unit,
                        "system": "http://unitsofmeasure.org",
                        "code": unit,
                    },
                }
            )
        add(
            {"resourceType": "Medication", "id": f"med-{i}", "code": coded(RXNORM, "106892", "insulin isophane, human")}
        )
        add(
            {
                "resourceType": "MedicationRequest",
                "id": f"mr-ref-{i}",
                "status": "active" if i % 2 else "stopped",
                "intent": "order",
                "medicationReference": {"reference": f"Medication/med-{i}"},
                "subject": subject,
                "authoredOn": "2026-01-01",
            }
        )
        add(
            {
                "resourceType": "MedicationRequest",
                "id": f"mr-cc-{i}",
                "status": "active" if i == 2 else "stopped",
                "intent": "order",
                "medicationCodeableConcept": coded(RXNORM, "311040", "insulin lispro 100 UNT/ML Injectable Solution"),
                "subject": subject,
                "authoredOn": "2026-01-01",
            }
        )
        for kind in ("Claim", "ExplanationOfBenefit"):
            add(
                {
                    "resourceType": kind,
                    "id": f"{kind}-{i}",
                    "status": "active",
                    "patient": subject,
                    "provider": {"reference": "Organization/org-1"},
                    "prescription": {"reference": f"MedicationRequest/mr-ref-{i}"},
                }
            )
        add(
            {
                "resourceType": "DiagnosticReport",
                "id": f"dr-{i}",
                "status": "final",
                "subject": subject,
                "code": coded(LOINC, "51990-0", "Basic metabolic panel"),
                "result": [{"reference": f"Observation/obs-4548-4-{i}"}],
            }
        )
    folder.mkdir()
    for rtype, items in lines.items():
        text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in items)
        (folder / f"{rtype}.ndjson").write_text(text, encoding="utf-8")
    return folder


def test_a_synthea_like_export_gives_the_same_results(
    package: Package, pools: dict[str, JavaPool], tmp_path: Path
) -> None:
    """Verify equality on a Synthea-shaped export, that recommendations fire there, and that most lines are skipped."""
    export = synthea_like(tmp_path / "export")
    assert assert_same_results(package, pools, export) > 0
    with open_population(export, lambda: Reads.of(package)) as population:
        assert population.bulk is not None
        assert population.bulk.kept < population.bulk.resources  # Claims, EOBs, Encounters, ... never parsed


def _given_populations() -> list[Path]:
    """The committed Synthea sample (once there), and the population GUIDELINE_PUSHDOWN_POPULATION names."""
    given = [SYNTHEA_SAMPLE] if SYNTHEA_SAMPLE.is_dir() else []
    return given + ([Path(os.environ[SAMPLE_ENV])] if os.environ.get(SAMPLE_ENV) else [])


@pytest.mark.parametrize("path", _given_populations(), ids=str)
def test_a_given_population_gives_the_same_results(package: Package, pools: dict[str, JavaPool], path: Path) -> None:
    """Verify equality on the committed Synthea sample and on the population `GUIDELINE_PUSHDOWN_POPULATION` names."""
    assert_same_results(package, pools, path)


# ---------------------------------------------------------------- Spark: before the shuffle


def test_spark_keys_only_what_is_read_before_the_group_by() -> None:
    """Verify the Spark job's line keying: skipped lines yield nothing, a dropped resource only its patient's key."""
    reads = Reads.of_requirements(
        [{"type": "Observation", "codeFilter": [{"path": "code", "code": [{"system": LOINC, "code": "1"}]}]}], {}
    )
    claim = '{"resourceType":"Claim","patient":{"reference":"Patient/p"}}'
    kept = '{"resourceType":"Observation","subject":{"reference":"Patient/p"},"code":{"coding":[{"system":"http://loinc.org","code":"1"}]}}'
    dropped = kept.replace('"code":"1"', '"code":"2"')
    assert spark.key_line(0, "f.ndjson", (claim, 0), reads) == []
    assert spark.key_line(0, "f.ndjson", (kept, 1), reads) == [("R", "p", 0, 2, kept)]
    assert spark.key_line(0, "f.ndjson", (dropped, 2), reads) == [("D", "p", 0, 3, "")]
    assert spark.key_line(0, "f.ndjson", (claim, 0))[0][:2] == ("R", "p")
    _, rec = spark.group_record(
        ["f.ndjson"], "p", [("D", "p", 0, 3, ""), ("P", "p", 0, 5, '{"resourceType":"Patient","id":"p"}')]
    )
    assert rec.error is None and rec.bundle_json is not None and "Observation" not in rec.bundle_json


def test_a_dropped_resource_still_places_its_patient(tmp_path: Path) -> None:
    """Verify, in the Python readers, that a resource dropped by code still groups as before: the patient it names
    without a Patient line is reported at the same place, while a type never read is skipped unparsed."""
    reads = Reads.of_requirements(
        [{"type": "Observation", "codeFilter": [{"path": "code", "code": [{"system": LOINC, "code": "1"}]}]}], {}
    )
    obs = {"resourceType": "Observation", "code": {"coding": [{"system": LOINC, "code": "2"}]}}
    lines = {
        "Patient": [{"resourceType": "Patient", "id": "a"}],
        "Observation": [
            {**obs, "id": "o1", "subject": {"reference": "Patient/a"}},
            {**obs, "id": "o2", "subject": {"reference": "Patient/nobody"}},
        ],
        "Claim": [{"resourceType": "Claim", "id": "c1", "patient": {"reference": "Patient/a"}}],
    }
    export = tmp_path / "export"
    export.mkdir()
    for rtype, items in lines.items():
        (export / f"{rtype}.ndjson").write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")
    for want in (None, lambda: reads):
        with open_population(export, want) as population:
            records = [(r.patient, r.error) for r in population.records()]
            assert population.bulk is not None
            assert population.bulk.kept == (4 if want is None else 1)  # the Patient only; o1, o2 checked, dropped
        assert records == [
            ("a", None),
            ("nobody", "no Patient resource for Patient/nobody in the export; export the Patient type too"),
        ]
    grouped = tmp_path / "grouped.ndjson"
    grouped.write_text(
        "".join(json.dumps(r) + "\n" for r in [*lines["Patient"], *lines["Claim"], *lines["Observation"]]),
        encoding="utf-8",
    )
    with open_population(grouped, lambda: reads) as population:
        records = [(r.where.rsplit(":", 1)[1], r.patient, r.error) for r in population.records()]
        bundle = next(population.records()).bundle_json
    assert records == [
        ("1-3", "a", None),
        ("4", "nobody", "no Patient resource for Patient/nobody; put the Patient line with its resources"),
    ]
    assert bundle is not None and "Claim" not in bundle and "Observation" not in bundle
