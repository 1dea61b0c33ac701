"""Verify Bulk Data export input: per-type NDJSON files grouped by patient on disk, shared resources, bad lines."""

from __future__ import annotations

import gzip
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from guideline.core.errors import BadInputError
from guideline.evaluation.records import PatientRecord, open_population
from tools.synth import synth_patients, write_population


def _patient(pid: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1990-01-01"}


def _obs(pid: str, n: int, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": f"{pid}-o{n}", "subject": {"reference": f"Patient/{pid}"}, **extra}


def _write(folder: Path, name: str, lines: list[Any]) -> None:
    folder.mkdir(exist_ok=True)
    text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
    (folder / name).write_text(text, encoding="utf-8")


def _resources(rec: PatientRecord) -> list[dict[str, Any]]:
    assert rec.bundle_json is not None, rec.error
    return sorted((e["resource"] for e in json.loads(rec.bundle_json)["entry"]), key=json.dumps)


def _records(path: Path) -> list[PatientRecord]:
    with open_population(path) as population:
        return list(population.records())


def test_bulk_export_groups_like_the_grouped_ndjson(tmp_path: Path) -> None:
    """Verify that a synth export gives each patient exactly the resources of the grouped NDJSON, in the same order."""
    patients = list(synth_patients(21, 40, observations=(5, 60)))
    write_population(tmp_path / "pop.ndjson", iter(patients), "ndjson")
    write_population(tmp_path / "bulk", iter(patients), "bulk")
    grouped = _records(tmp_path / "pop.ndjson")
    bulk = _records(tmp_path / "bulk")
    assert [r.patient for r in bulk] == [r.patient for r in grouped] == [p[0]["id"] for p in patients]
    for g, b in zip(grouped, bulk, strict=True):
        assert _resources(b) == _resources(g), b.patient
        assert b.where == f"{tmp_path / 'bulk' / 'Patient.ndjson'}:{b.index + 1}"


def test_any_file_names_any_line_order_and_no_manifest(tmp_path: Path) -> None:
    """Verify that lines may come in any order across files of any name; patients follow their Patient lines."""
    patients = list(synth_patients(22, 15, observations=(3, 20)))
    export = tmp_path / "export"
    lines = [r for p in patients for r in p if r["resourceType"] != "Patient"]
    random.Random(1).shuffle(lines)  # noqa: S311 - test data order, not secrets
    _write(export, "2.Observation.ndjson", lines[: len(lines) // 2])
    _write(export, "1.Patient.ndjson", [p[0] for p in reversed(patients)])
    _write(export, "3.mixed.ndjson", lines[len(lines) // 2 :])
    records = _records(export)
    assert [r.patient for r in records] == [p[0]["id"] for p in reversed(patients)]
    by_id = {p[0]["id"]: sorted(p, key=json.dumps) for p in patients}
    for rec in records:
        assert _resources(rec) == by_id[str(rec.patient)]


def test_manifest_lists_the_files(tmp_path: Path) -> None:
    """Verify that the manifest's files are read (by the url's file name) and a file it names must be there."""
    export = tmp_path / "export"
    _write(export, "Patient.ndjson", [_patient("a")])
    _write(export, "stray.ndjson", [_patient("b")])  # not in the manifest: not part of the export
    manifest = {
        "transactionTime": "2026-06-01T00:00:00Z",
        "request": "https://ehr.example/fhir/Patient/$export",
        "requiresAccessToken": True,
        "output": [{"type": "Patient", "url": "https://ehr.example/files/Patient.ndjson?x=1"}],
        "error": [],
    }
    (export / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert [r.patient for r in _records(export)] == ["a"]
    manifest["output"].append({"type": "Observation", "url": "https://ehr.example/files/Observation.ndjson"})
    (export / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(BadInputError, match=r"output\[1\] names Observation\.ndjson, which is not in"):
        open_population(export)


def test_shared_resources_are_attached_to_the_patients_that_refer_to_them(tmp_path: Path) -> None:
    """Verify that a Medication (no patient) joins each patient whose resources refer to it, transitively."""
    export = tmp_path / "export"
    med = {"resourceType": "Medication", "id": "m1", "ingredient": [{"itemReference": {"reference": "Substance/s1"}}]}
    substance = {"resourceType": "Substance", "id": "s1"}
    unused = {"resourceType": "Medication", "id": "m2"}
    request = {
        "resourceType": "MedicationRequest",
        "id": "r1",
        "subject": {"reference": "Patient/a"},
        "medicationReference": {"reference": "http://ehr.example/fhir/Medication/m1"},
    }
    _write(export, "Patient.ndjson", [_patient("a"), _patient("b")])
    _write(export, "Medication.ndjson", [unused, med])
    _write(export, "Substance.ndjson", [substance])
    _write(export, "MedicationRequest.ndjson", [request])
    a, b = _records(export)
    assert _resources(a) == sorted([_patient("a"), request, med, substance], key=json.dumps)
    assert _resources(b) == [_patient("b")]


def test_bad_lines_are_placed_or_reported_alone(tmp_path: Path) -> None:
    """Verify: a broken line naming a patient poisons that patient; one naming none is its own bad record."""
    export = tmp_path / "export"
    _write(export, "Patient.ndjson", [_patient("a"), _patient("b"), {"resourceType": "Patient"}, _patient("d")])
    _write(
        export,
        "Observation.ndjson",
        [
            _obs("a", 1),
            '{"resourceType": "Observation", "subject": {"reference": "Patient/b"}, "valueQuantity": {',
            "not json at all",
            _obs("c", 1),  # no Patient/c in the export
            _obs("d", 1),
        ],
    )
    _write(export, "Patient2.ndjson", [_patient("d")])
    records = _records(export)
    got = [(r.patient, r.where.rsplit("/", 1)[-1], r.error) for r in records]
    assert got[0] == (None, "Observation.ndjson:3", "line 3:1: not valid JSON: Expecting value")
    assert got[1] == (None, "Patient.ndjson:3", "line 3: the Patient has no id; give it one")
    assert [g[0] for g in got[2:]] == ["a", "b", "d", "c"]
    assert got[2][2] is None
    assert got[3][2] is not None and got[3][2].startswith("Observation.ndjson line 2:")
    assert got[4][2] == "a second Patient/d at Patient2.ndjson:1"
    assert got[5][2] is not None and "no Patient resource for Patient/c" in got[5][2]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"Patient.ndjson": b"", "Observation.ndjson": b"\n\n"}, "every NDJSON file of the export is empty"),
        ({"Patient.ndjson": gzip.compress(b"{}\n")}, "a gzip archive"),
        ({"Medication.ndjson": b'{"resourceType": "Medication", "id": "m"}\n'}, "the export holds no patient"),
        ({"Patient.ndjson": b'{"resourceType": "Patient", "id": "a"}\n', "a.json": b"{}"}, "other *.json files"),
        ({"notes.txt": b"hello"}, "no *.json nor *.ndjson file in this folder"),
    ],
    ids=["empty", "gzip", "no-patient", "mixed", "nothing"],
)
def test_folders_that_are_not_an_export_are_refused_at_once(
    tmp_path: Path, files: dict[str, bytes], message: str
) -> None:
    """Verify that an export in which nothing is input is one BadInputError (exit 7), never an empty result."""
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(BadInputError, match=re.escape(message)):
        open_population(tmp_path)


def test_index_is_on_disk_and_removed_on_close(tmp_path: Path) -> None:
    """Verify that the index lives in a temporary folder that closing the population removes."""
    write_population(tmp_path / "bulk", synth_patients(23, 5, observations=(3, 3)), "bulk")
    population = open_population(tmp_path / "bulk")
    assert population.bulk is not None
    folder = Path(population.bulk._tmp.name)
    assert (folder / "index.sqlite").is_file()
    assert population.total == 5 and population.unit == "patients"
    population.close()
    assert not folder.exists()
