"""`guideline export` against the real local HAPI server (the token-protected test EHR): a Group $export with
`_typeFilter` from the package's data requirements, the folder it leaves, and population mode on it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from guideline.cli import main as cli
from guideline.content.cql import Engine
from guideline.content.package import build_package
from guideline.core.config import Config
from guideline.evaluation.bundles import load_patient_bundle
from guideline.remote import bulk_export as bx
from guideline.remote.http import Client
from guideline.remote.patients import load_patient
from tests.integration.conftest import Ehr
from tests.integration.test_cds_channels import with_prefix
from tests.support import ROOT

pytestmark = pytest.mark.server

PREFIX = "bx-"
GROUP = "bx-group"
# One scenario per kind of data the logic reads: a Medication by reference (request and dispense), lab
# Observations, Conditions, a delivery Procedure, a diet ServiceRequest, a child (no data beyond the Patient).
CASES = [
    "r2-on-bromocriptine-by-reference",
    "safety12-dispense-by-reference",
    "r3-triglycerides-at-threshold",
    "r1-recent-normal-insulin",
    "r2-galactorrhoea",
    "safety3-delivery-41-days",
    "safety8-active-diet-service-request",
    "r5-child",
]
AT = "2026-06-01T12:00:00Z"
# What an EHR also holds and the logic never reads: a type no retrieve names, and codes in none of the
# value sets of the types the logic filters by code (heart rate, appendectomy, a colonoscopy order).
# Conditions are read whole: pregnancy and pancreatitis by ICD-10 prefix (project safety rules 13, 17).
NOISE_CODES = {
    "Observation": ("http://loinc.org", "8867-4"),
    "Procedure": ("http://snomed.info/sct", "80146002"),
    "ServiceRequest": ("http://snomed.info/sct", "73761001"),
}


def _noise(pid: str) -> list[dict[str, Any]]:
    """Resources of patient `pid` that an export of only what the logic reads must leave out."""
    subject = {"reference": f"Patient/{pid}"}
    out: list[dict[str, Any]] = [
        {
            "resourceType": "Encounter",
            "id": f"{pid}-noise-enc",
            "status": "finished",
            "subject": subject,
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        },
    ]
    for rtype, (system, code) in NOISE_CODES.items():
        res: dict[str, Any] = {
            "resourceType": rtype,
            "id": f"{pid}-noise-{rtype.lower()}",
            "subject": subject,
            "code": {"coding": [{"system": system, "code": code}]},
        }
        res.update(
            {
                "Observation": {"status": "final"},
                "Procedure": {"status": "completed"},
                "ServiceRequest": {"status": "completed", "intent": "order"},
            }.get(rtype, {})
        )
        out.append(res)
    return out


def _bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}


def _results(path: Path) -> dict[str, Any]:
    docs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {d["patient"]: d for d in docs}


@dataclass(frozen=True)
class Loaded:
    """The scenarios on the test EHR: their patient ids, their Bundles on disk, the token file, the export query."""

    pids: list[str]
    bundles: Path
    token_file: Path
    query: bx.ExportQuery


@pytest.fixture(scope="module")
def loaded(ehr: Ehr, config: Config, engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    """CASES (ids prefixed) and, for each patient, resources the logic never reads, on the test EHR; a Group of them."""
    pkg = build_package(config, engine)
    query = bx.export_query(bx.package_requirements(pkg.resources), pkg.value_sets)
    filters = {f.split("?", 1)[0]: f for f in query.type_filters}
    for rtype, (system, code) in NOISE_CODES.items():
        assert f"{system}|{code}" not in filters[rtype], f"{code} is read by the logic: not noise"
    tmp = tmp_path_factory.mktemp("bulk")
    bundles_dir = tmp / "bundles"
    bundles_dir.mkdir()
    pids: list[str] = []
    with Client(ehr.url, token=ehr.token) as ehr_client:
        for case in CASES:
            bundle = with_prefix(json.loads((ROOT / "tests" / "cases" / case / "patient.json").read_text()), PREFIX)
            (bundles_dir / f"{case}.json").write_text(json.dumps(bundle), encoding="utf-8")
            _, pid = load_patient_bundle(bundles_dir / f"{case}.json")
            pids.append(pid)
            load_patient(ehr_client, bundle)
            load_patient(ehr_client, _bundle(_noise(pid)))
        group = {
            "resourceType": "Group",
            "id": GROUP,
            "type": "person",
            "actual": True,
            "member": [{"entity": {"reference": f"Patient/{p}"}} for p in pids],
        }
        ehr_client.request("PUT", f"Group/{GROUP}", json_body=group)
    token_file = tmp / "token"
    token_file.write_text(ehr.token + "\n", encoding="utf-8")
    return Loaded(pids, bundles_dir, token_file, query)


def _export(
    ehr: Ehr, loaded: Loaded, out: Path, capsys: pytest.CaptureFixture[str], *level: str
) -> dict[str, set[str]]:
    """Run `guideline export` at `level` into `out`; check the folder; return the exported ids per type."""
    rc = cli.main(
        [
            "export",
            "--server",
            ehr.url,
            "--token-file",
            str(loaded.token_file),
            *level,
            "--out",
            str(out),
            "--max-poll-interval",
            "1",
            "--max-wait",
            "600",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert ehr.token not in captured.out + captured.err
    assert "_typeFilter=Observation?code=" in captured.err
    manifest = json.loads((out / bx.MANIFEST).read_text())
    assert not (out / bx.WORK_DIR).exists()
    assert sorted(p.name for p in out.iterdir()) == sorted([bx.MANIFEST, *(o["url"] for o in manifest["output"])])
    filters = {f.split("?", 1)[0]: f for f in loaded.query.type_filters}
    seen: dict[str, set[str]] = {}
    for item in manifest["output"]:
        lines = [json.loads(s) for s in (out / item["url"]).read_text().splitlines() if s.strip()]
        assert len(lines) == item["count"]
        for res in lines:
            rtype = res["resourceType"]
            assert rtype == item["type"] and rtype in loaded.query.types
            assert "noise" not in res["id"], f"{rtype}/{res['id']} is not read by the logic but was exported"
            if rtype in filters:
                codes = {f"{c.get('system')}|{c.get('code')}" for c in res["code"]["coding"]}
                assert any(c in filters[rtype] for c in codes), f"{rtype}/{res['id']} matches no _typeFilter code"
            seen.setdefault(rtype, set()).add(res["id"])
    return seen


def test_group_export_holds_only_what_the_logic_reads(
    ehr: Ehr, loaded: Loaded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Verify a filtered Group export from the test EHR: only the asked-for types and codes, the referenced
    Medications, a manifest the readers accept, and the same recommendations as the scenarios' own Bundles."""
    out = tmp_path / "export"
    seen = _export(ehr, loaded, out, capsys, "--group", GROUP)
    assert seen["Patient"] == set(loaded.pids)
    assert {"Medication", "MedicationRequest", "MedicationDispense", "Procedure", "ServiceRequest"} <= set(seen)

    # Population mode reads the folder and finds what it finds in the scenarios' own Bundles.
    from_export, from_bundles = tmp_path / "export.ndjson", tmp_path / "bundles.ndjson"
    for source, dest in ((out, from_export), (loaded.bundles, from_bundles)):
        rc = cli.main(
            [
                "recommend",
                "--population",
                str(source),
                "--at",
                AT,
                "--engine",
                "js",
                "--workers",
                "1",
                "--out",
                str(dest),
            ]
        )
        assert rc == 0, capsys.readouterr().err
    assert _results(from_export) == _results(from_bundles)
    assert set(_results(from_export)) == set(loaded.pids)


# Two more $export jobs on HAPI (about a minute): full tier; the default tier keeps the Group export end to end,
# and the unit tests (tests/unit/remote/test_bulk_export.py) cover the Patient and system kickoffs on a stub.
@pytest.mark.full
def test_patient_and_system_exports(
    ehr: Ehr, loaded: Loaded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Verify Patient/$export (POSTed ids: those patients only, their Medication fetched) and the system $export
    (every patient on the EHR, ours among them, still without the resources the logic does not read)."""
    two = loaded.pids[:2]  # a Medication by reference in each
    seen = _export(ehr, loaded, tmp_path / "patients", capsys, "--patient", two[0], "--patient", two[1])
    assert seen["Patient"] == set(two)
    assert len(seen["Medication"]) == 2
    everything = _export(ehr, loaded, tmp_path / "system", capsys)
    assert set(loaded.pids) <= everything["Patient"]
