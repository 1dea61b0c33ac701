"""Verify `scripts/synth --synthea` post-processing and the check's own reading of records (no Synthea run)."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from guideline.evaluation.pushdown import Reads
from tools import synth, synthea
from tools.synthea import GL_CODE, patient_facts, postprocess

AT = dt.date(2026, 12, 1)
PID = "p1"


def _med_request(status: str, authored: str, **medication: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": f"mr-{status}-{authored}",
        "status": status,
        "intent": "order",
        "subject": {"reference": f"Patient/{PID}"},
        "authoredOn": authored,
        **medication,
    }


def _patient(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": PID, "gender": "female", "birthDate": "2010-12-02", **extra}


HUMULIN = {"medicationCodeableConcept": {"coding": [{"system": synthea.RXNORM, "code": "106892"}]}}
BY_TEXT = {"medicationCodeableConcept": {"text": "Insulin glargine pen"}}
BY_ATC = {"medicationCodeableConcept": {"coding": [{"system": synthea.ATC, "code": "A10AE04"}]}}
BY_REF = {"medicationReference": {"reference": "Medication/m1"}}
METFORMIN = {
    "medicationCodeableConcept": {"coding": [{"system": synthea.RXNORM, "code": "860975"}], "text": "metformin"}
}
MEDICATIONS = {"m1": {"resourceType": "Medication", "id": "m1", "code": {"text": "NPH insulin"}}}


@pytest.mark.parametrize(
    ("record", "insulin"),
    [
        (_med_request("active", "2015-01-01", **HUMULIN), True),  # active: any date
        (_med_request("stopped", "2026-09-03", **HUMULIN), True),  # stopped 89 days before
        (_med_request("stopped", "2026-08-01", **HUMULIN), False),  # stopped long ago
        (_med_request("completed", "2026-10-01", **BY_TEXT), True),
        (_med_request("active", "2026-10-01", **BY_ATC), True),
        (_med_request("active", "2026-10-01", **BY_REF), True),  # the referenced Medication's text
        (_med_request("active", "2026-10-01", **METFORMIN), False),
    ],
)
def test_insulin_exposure_is_read_from_the_raw_record(record: dict[str, Any], insulin: bool) -> None:
    """Verify that the check finds insulin by RxNorm product, ATC A10A, text or reference, in the 90-day window."""
    assert patient_facts([_patient(), record], MEDICATIONS, AT).insulin is insulin


def test_age_pregnancy_and_death() -> None:
    """Verify age (the day before the 16th birthday), an active pregnancy and a month-precision death date."""
    preg = {
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{"code": "active"}]},
        "code": {"coding": [{"system": synthea.SNOMED, "code": "72892002", "display": "Normal pregnancy"}]},
        "onsetDateTime": "2026-08-01",
    }
    history = {**preg, "code": {"text": "Past pregnancy history of miscarriage"}}
    facts = patient_facts([_patient(deceasedDateTime="2026-12"), preg, history], {}, AT)
    assert (facts.age, facts.pregnant, facts.deceased) == (15, True, True)
    assert not patient_facts([_patient(), history], {}, AT).pregnant


def _raw(folder: Path) -> Path:
    folder.mkdir()
    lines = {
        "Patient": [_patient(), {**_patient(), "id": "p2", "deceasedDateTime": "2026-03-04T10:00:00Z"}],
        "Encounter": [{"resourceType": "Encounter", "id": "e1", "subject": {"reference": "Patient/p1"}}],
        "Observation": [
            {
                "resourceType": "Observation",
                "id": "o1",
                "subject": {"reference": "Patient/p1"},
                "code": {"coding": [{"system": synthea.LOINC, "code": "8302-2"}]},
            },
            {
                "resourceType": "Observation",
                "id": "o2",
                "subject": {"reference": "Patient/p1"},
                "code": {"coding": [{"system": synthea.LOINC, "code": "4548-4"}]},
            },
        ],
        "Medication": [{"resourceType": "Medication", "id": "m1"}, {"resourceType": "Medication", "id": "m9"}],
        "MedicationRequest": [_med_request("active", "2026-10-01", **BY_REF)],
    }
    for rtype, resources in lines.items():
        (folder / f"{rtype}.ndjson").write_text("".join(json.dumps(r) + "\n" for r in reversed(resources)))
    return folder


KEEP = Reads(
    {
        "Condition": None,
        "Observation": frozenset({f"{synthea.LOINC}|4548-4", f"{synthea.LOINC}|27873-9"}),
        "MedicationRequest": None,
        "Medication": None,
    }
)


def test_postprocess_adds_gl_and_labs_and_trims(tmp_path: Path) -> None:
    """Verify: GL for every patient, labs for the share, trimmed to what the logic reads, byte-reproducible."""
    raw = _raw(tmp_path / "raw")
    outs = []
    for name in ("a", "b"):
        rep = postprocess(raw, tmp_path / name, seed=42, reference=AT, labs_share=1.0, keep=KEEP, gzip_files=True)
        outs.append({p.name: p.read_bytes() for p in sorted((tmp_path / name).iterdir())})
    assert outs[0] == outs[1]
    assert (rep.patients, rep.with_gl, rep.with_labs) == (2, 2, 2)
    assert sorted(outs[0]) == [
        f"{t}.ndjson.gz" for t in ("Condition", "Medication", "MedicationRequest", "Observation", "Patient")
    ]
    read = {n: [json.loads(x) for x in gzip.decompress(b).splitlines()] for n, b in outs[0].items()}
    assert [c["code"]["coding"] for c in read["Condition.ndjson.gz"]] == [[GL_CODE], [GL_CODE]]
    assert [m["id"] for m in read["Medication.ndjson.gz"]] == ["m1"]  # m9: referenced by nothing kept
    obs = read["Observation.ndjson.gz"]
    assert "o1" not in {o["id"] for o in obs} and "o2" in {o["id"] for o in obs}
    units = {o["valueQuantity"]["unit"] for o in obs if o["code"]["coding"][0]["code"] == "27873-9"}
    assert units <= {"u[IU]/mL", "pmol/L"} and units
    # The deceased patient's labs come before the death date.
    p2 = [o["effectiveDateTime"] for o in obs if o["subject"]["reference"] == "Patient/p2"]
    assert p2 and max(p2) < "2026-03-04"


def test_postprocess_untrimmed_keeps_everything(tmp_path: Path) -> None:
    """Verify that without --trim every Synthea line stays, plus the GL Conditions (none for --gl-share 0)."""
    raw = _raw(tmp_path / "raw")
    rep = postprocess(raw, tmp_path / "out", seed=1, reference=AT, gl_share=0.0)
    assert rep.with_gl == 0 and rep.resources["Encounter"] == 1 and rep.resources["Observation"] == 2
    assert not (tmp_path / "out" / "Condition.ndjson").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--synthea", "0", "--out", "x"], "--synthea N needs N >= 1"),
        (["--synthea", "5"], "--synthea needs --out DIR"),
        (["--check", "/nonexistent/folder"], "not a folder"),
        (["--check", ".", "--engines", "python"], "--engines"),
        (["--synthea", "5", "--out", "x", "--from-raw", "/nonexistent"], "no Patient.ndjson"),
        (["--synthea", "5", "--out", "x", "--check", "."], "give --synthea N"),
        (["--check"], "give --synthea N"),
    ],
)
def test_bad_options_are_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that bad options exit 2 with a message naming the option, before anything runs."""
    assert synth.main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--synthea", "5", "--out", "x", "--gl-share", "1.5"], ["--check", ".", "--at"]])
def test_bad_values_exit_2(argv: list[str]) -> None:
    """Verify that a share outside 0..1 or a missing value is an argparse usage error (exit 2)."""
    with pytest.raises(SystemExit) as e:
        synth.main(argv)
    assert e.value.code == 2
