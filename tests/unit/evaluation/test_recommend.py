"""Verify `guideline recommend`: input handling, exit codes and output, through the CLI and the API."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from guideline.cli import main as cli
from guideline.cli.common import parse_at
from guideline.core.errors import BadInputError, ExitCode
from guideline.evaluation.bundles import load_patient_bundle
from tests.support import CASES_DIR, ROOT


def _patient(pid: str = "p1") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1990-01-01"}


def _bundle(*resources: dict[str, Any], btype: str = "collection") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": btype, "entry": [{"resource": r} for r in resources]}


def _write(tmp_path: Path, name: str, content: str | dict[str, Any]) -> Path:
    p = tmp_path / name
    p.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return p


def run_cli(argv: list[str]) -> int:
    return cli.main(["recommend", *argv])


# ---------------------------------------------------------------- input handling (API)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"resourceType": "Bundle", "type": "collection", "entry": [}', "bad.json:1:"),
        ("", "not valid JSON"),
        ('{"resourceType": "Patient", "id": "p1"}', "not a FHIR Bundle (resourceType is 'Patient')"),
        ("[1, 2]", "not a FHIR Bundle"),
        (json.dumps(_bundle(btype="searchset")), "Bundle type 'searchset' is not supported"),
        (json.dumps(_bundle()), "holds no Patient"),
        (json.dumps(_bundle(_patient("a"), _patient("b"))), "holds 2 Patients"),
        (json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [{}]}), "entry[0]"),
        (json.dumps(_bundle({"resourceType": "Patient"})), "no id"),
    ],
)
def test_bad_bundles_are_rejected(tmp_path: Path, content: str, message: str) -> None:
    """Verify that unusable bundles raise BadInputError naming the file and the reason."""
    path = _write(tmp_path, "bad.json", content)
    with pytest.raises(BadInputError) as err:
        load_patient_bundle(path)
    assert str(path) in err.value.message
    assert message in err.value.message
    assert err.value.exit_code == ExitCode.BAD_INPUT


def test_missing_file_is_rejected(tmp_path: Path) -> None:
    """Verify that a file that cannot be read is a BadInputError, not an OSError."""
    with pytest.raises(BadInputError, match="cannot read"):
        load_patient_bundle(tmp_path / "nope.json")


def test_transaction_bundle_uses_entry_resources(tmp_path: Path) -> None:
    """Verify that batch/transaction bundles are read from entry.resource and skip resource-less entries."""
    patient = {"resourceType": "Patient", "gender": "male"}  # id only in fullUrl, as transactions allow
    data = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:5e1c", "resource": patient, "request": {"method": "POST", "url": "x"}},
            {"request": {"method": "DELETE", "url": "Observation/old"}},
        ],
    }
    bundle, pid = load_patient_bundle(_write(tmp_path, "tx.json", data))
    assert pid == "5e1c"
    assert bundle["type"] == "collection"
    assert [e["resource"]["id"] for e in bundle["entry"]] == ["5e1c"]


def test_bom_is_accepted(tmp_path: Path) -> None:
    """Verify that a UTF-8 byte-order mark (common in Windows exports) does not break reading."""
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(_bundle(_patient())).encode())
    assert load_patient_bundle(path)[1] == "p1"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-06-01T12:00:00Z", "2026-06-01T12:00:00Z"),
        ("2026-06-01T12:00:00+00:00", "2026-06-01T12:00:00Z"),
        ("2026-06-01T14:00:00+02:00", "2026-06-01T14:00:00+02:00"),
        ("2026-06-01", "2026-06-01T00:00:00Z"),
    ],
)
def test_at_is_normalised(value: str, expected: str) -> None:
    """Verify that --at accepts a date-time with offset or a date."""
    assert parse_at(value) == expected


@pytest.mark.parametrize("value", ["2026-06-01T12:00:00", "tomorrow", "2026-13-01"])
def test_at_needs_offset(value: str) -> None:
    """Verify that --at without an offset, or not a date, is refused."""
    with pytest.raises(argparse.ArgumentTypeError):
        parse_at(value)


# ---------------------------------------------------------------- CLI


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        json.dumps(_bundle()),
        json.dumps(_bundle(_patient("a"), _patient("b"))),
        json.dumps({"resourceType": "Patient", "id": "p1"}),
    ],
    ids=["not-json", "no-patient", "two-patients", "not-a-bundle"],
)
def test_cli_bad_input_exit_code(tmp_path: Path, content: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that bad input exits BAD_INPUT with a one-line error naming the file, no traceback."""
    path = _write(tmp_path, "in.json", content)
    rc = run_cli(["--patient-bundle", str(path), "--at", "2026-06-01T12:00:00Z"])
    err = capsys.readouterr().err
    assert rc == ExitCode.BAD_INPUT
    assert str(path) in err and "Traceback" not in err


def test_cli_missing_file_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that a missing bundle file exits BAD_INPUT."""
    assert run_cli(["--patient-bundle", str(tmp_path / "missing.json")]) == ExitCode.BAD_INPUT
    assert "cannot read" in capsys.readouterr().err


def test_cli_at_without_offset_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that --at without an offset is a usage error (exit 2)."""
    path = CASES_DIR / "gl-adult-no-data" / "patient.json"
    assert run_cli(["--patient-bundle", str(path), "--at", "2026-06-01T12:00:00"]) == ExitCode.USAGE
    assert "offset" in capsys.readouterr().err


def test_cli_json_matches_expected_case(capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that --json prints exactly the documented document for a scenario."""
    case = CASES_DIR / "r2-galactorrhoea"
    expected = json.loads((case / "expected.json").read_text(encoding="utf-8"))
    rc = run_cli(["--patient-bundle", str(case / "patient.json"), "--at", expected["at"], "--json"])
    assert rc == ExitCode.OK
    doc = json.loads(capsys.readouterr().out)
    assert doc["patient"] == "r2-galactorrhoea" and doc["evaluatedAt"] == expected["at"]
    fired = {r["id"]: sorted(c for a in r["activities"] for c in a["codes"]) for r in doc["recommendations"]}
    assert fired == expected["recommendations"]


def test_cli_text_output(capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that the text output names each recommendation and shows the patient-specific R2 detail."""
    case = CASES_DIR / "r2-galactorrhoea"
    rc = run_cli(["--patient-bundle", str(case / "patient.json"), "--at", "2026-06-01"])
    out = capsys.readouterr().out
    assert rc == ExitCode.OK
    assert "[GLR2Bromocriptine]" in out and "disappearance of lactorea" in out
    assert "[GLR1InsulinAssessment]" not in out


def test_cli_subprocess_no_traceback(tmp_path: Path) -> None:
    """Verify that the installed entry point reports two Patients cleanly, as a separate process."""
    path = _write(tmp_path, "two.json", _bundle(_patient("a"), _patient("b")))
    proc = subprocess.run(
        [sys.executable, "-m", "guideline", "recommend", "--patient-bundle", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == ExitCode.BAD_INPUT
    assert "2 Patients" in proc.stderr and "Traceback" not in proc.stderr
