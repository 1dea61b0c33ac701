"""Verify the Spark job (embedded local mode) against `recommend --population` on the same Bulk Data export."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from guideline.core.errors import BadInputError, ExitCode, ToolchainError
from guideline.evaluation import spark as job
from guideline.evaluation.bundles import load_patient_bundle
from tests.support import ROOT
from tests.support.casedata import CASES
from tools.synth import synth_patients, write_population

AT = "2026-06-01T12:00:00Z"
# Lines the local path reports as bad records (the patient they name is skipped, or they stand alone).
BAD_LINES = {
    "Observation.ndjson": [
        # A code the logic reads (HbA1c) in its raw text, so the push-down parses the line and reports it: a
        # broken line with none of those codes is dropped unparsed (pushdown.py), by both paths alike.
        '{"resourceType": "Observation", "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]}, '
        '"subject": {"reference": "Patient/syn41-000003"}, "value',
        "no",
    ],
    "Patient.ndjson": ['{"resourceType": "Patient", "gender": "male"}'],
}
GZIPPED = "Observation.ndjson.gz"


def _case_resources() -> Iterator[dict[str, Any]]:
    """The resources of every tests/cases scenario whose Patient id is its own (others would merge)."""
    seen: set[str] = set()
    for case in CASES:
        bundle, pid = load_patient_bundle(case / "patient.json")
        if pid in seen:
            continue
        seen.add(pid)
        for entry in bundle.get("entry", []):
            yield entry["resource"]


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic export (40 patients) plus the scenarios, a shared Medication and a few bad lines, per type.

    Observation.ndjson is gzipped, as servers send it (Spark decompresses it itself, the local path unpacks it).
    """
    folder = tmp_path_factory.mktemp("spark") / "export"
    write_population(folder, synth_patients(41, 40, observations=(10, 60)), "bulk")
    (folder / "manifest.json").unlink()  # every *.ndjson is read, including those added below
    extra: dict[str, list[str]] = {}
    for res in _case_resources():
        extra.setdefault(f"{res['resourceType']}.ndjson", []).append(json.dumps(res))
    med = {"resourceType": "Medication", "id": "shared-m1", "code": {"text": "metformin"}}
    ref = {
        "resourceType": "MedicationRequest",
        "id": "shared-r1",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/syn41-000001"},
        "medicationReference": {"reference": "Medication/shared-m1"},
    }
    extra.setdefault("Medication.ndjson", []).append(json.dumps(med))
    extra.setdefault("MedicationRequest.ndjson", []).append(json.dumps(ref))
    for name, lines in BAD_LINES.items():
        extra.setdefault(name, []).extend(lines)
    for name, lines in extra.items():
        with (folder / name).open("a", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
    obs = folder / "Observation.ndjson"
    (folder / GZIPPED).write_bytes(gzip.compress(obs.read_bytes()))
    obs.unlink()
    return folder


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "guideline.cli.main", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def _skipped(stderr: str) -> list[str]:
    return sorted(line for line in stderr.splitlines() if line.startswith("skipped: "))


def test_pyspark_is_installed() -> None:
    """Verify that set-up installed PySpark: the Spark test must fail, never skip, where it is missing."""
    try:
        job.require_pyspark()
    except ToolchainError as e:
        pytest.fail(e.message)


def test_spark_local_mode_writes_what_the_local_path_writes(export: Path, tmp_path: Path) -> None:
    """Verify: Spark local[2] gives byte-identical result lines (after sorting), the same skipped records, Parquet."""
    job.require_pyspark()
    local = _run("recommend", "--population", str(export), "--at", AT, "--out", str(tmp_path / "local.ndjson"))
    assert local.returncode == ExitCode.BAD_INPUT, local.stderr
    out = tmp_path / "spark-out"
    spark = _run("population-spark", str(export), "--out", str(out), "--at", AT, "--master", "local[2]")
    assert spark.returncode == ExitCode.BAD_INPUT, spark.stderr
    assert "error:" in spark.stderr and "Traceback" not in spark.stderr

    expected = (tmp_path / "local.ndjson").read_text(encoding="utf-8").splitlines(keepends=True)
    parts = sorted((out / job.NDJSON_DIR).glob("part-*"))
    got = [line for p in parts for line in p.read_text(encoding="utf-8").splitlines(keepends=True)]
    assert len(expected) > 40 and sorted(got) == sorted(expected)
    assert got == expected, "the parts, in order, hold the lines in the local path's order"
    skipped = _skipped(local.stderr)
    assert len(skipped) == 3 and _skipped(spark.stderr) == skipped
    # The three bad lines, located as the local path locates them (both lists are equal, so check one).
    obs = gzip.decompress((export / GZIPPED).read_bytes()).decode("utf-8").splitlines()
    pats = (export / "Patient.ndjson").read_text(encoding="utf-8").splitlines()
    bad_obs, bad_pat, poisoned = (
        obs.index("no") + 1,
        pats.index(BAD_LINES["Patient.ndjson"][0]) + 1,
        obs.index(BAD_LINES["Observation.ndjson"][0]) + 1,
    )
    where = {line.split(": ", 2)[1].rsplit("/", 1)[-1]: line.split(": ", 2)[2] for line in skipped}
    assert where[f"{GZIPPED}:{bad_obs}"].startswith(f"line {bad_obs}:1: not valid JSON")
    assert where[f"Patient.ndjson:{bad_pat}"] == f"line {bad_pat}: the Patient has no id; give it one"
    assert where["Patient.ndjson:4"].startswith(f"{GZIPPED} line {poisoned}:")  # syn41-000003
    _check_parquet(out / job.PARQUET_DIR, expected, export)


# Full tier (about 45 s): the default tier shows Spark with the push-down equal to the local path (above), and
# tests/unit/evaluation/test_pushdown.py the push-down equal to --read-all on the other readers.
@pytest.mark.full
def test_spark_reads_the_same_without_the_push_down(export: Path, tmp_path: Path) -> None:
    """Verify: with --read-all (every line parsed and shuffled) Spark writes the lines the local path writes.

    The local path runs with the push-down (the default), Spark without: the same lines, the same skipped records.
    """
    job.require_pyspark()
    local = _run("recommend", "--population", str(export), "--at", AT, "--out", str(tmp_path / "local.ndjson"))
    assert local.returncode == ExitCode.BAD_INPUT, local.stderr
    out = tmp_path / "spark-out"
    spark = _run("population-spark", str(export), "--out", str(out), "--at", AT, "--master", "local[2]", "--read-all")
    assert spark.returncode == ExitCode.BAD_INPUT, spark.stderr
    expected = (tmp_path / "local.ndjson").read_text(encoding="utf-8").splitlines(keepends=True)
    got = [
        line
        for p in sorted((out / job.NDJSON_DIR).glob("part-*"))
        for line in p.read_text(encoding="utf-8").splitlines(keepends=True)
    ]
    assert len(expected) > 40 and got == expected
    assert _skipped(spark.stderr) == _skipped(local.stderr)


def _check_parquet(folder: Path, expected: list[str], export: Path) -> None:
    """Spark's own Parquet reader (parquet-mr) reads back the same documents, patients and recommendation ids.

    And, in the same session, the glob a URI export is read with finds the plain and the gzipped files by name.
    """
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[1]")
        .appName("guideline-test-parquet")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .getOrCreate()
    )
    try:
        rows = spark.read.parquet(str(folder)).collect()
        [pattern] = job.export_files("hdfs:///x")
        found = job.expand_uris(spark, [f"file://{export}/{pattern.rsplit('/', 1)[1]}"])
    finally:
        spark.stop()
    names = sorted(
        (p.name for p in export.iterdir() if p.suffix in (".ndjson", ".gz")), key=lambda n: n.removesuffix(".gz")
    )
    assert [f.rsplit("/", 1)[1] for f in found] == names and GZIPPED in names
    assert sorted(r["document"] + "\n" for r in rows) == sorted(expected)
    for r in rows:
        doc = json.loads(r["document"])
        assert (r["patient"], r["evaluatedAt"]) == (doc["patient"], AT)
        assert list(r["recommendations"]) == [rec["id"] for rec in doc["recommendations"]]


def test_bad_export_fails_before_spark_starts(tmp_path: Path) -> None:
    """Verify that a folder with nothing to read is exit 7 with what was expected, and a used --out is refused."""
    (tmp_path / "empty").mkdir()
    res = _run("population-spark", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert res.returncode == ExitCode.BAD_INPUT
    assert "no *.ndjson nor *.ndjson.gz file in this folder; expected a Bulk Data export folder" in res.stderr
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine", encoding="utf-8")
    res = _run("population-spark", str(tmp_path / "empty"), "--out", str(tmp_path / "used"))
    assert res.returncode == ExitCode.USAGE and "is not an earlier result of this job" in res.stderr


def test_export_files_are_checked_before_spark_starts(tmp_path: Path) -> None:
    """Verify (no Spark started): gzipped files are listed, and manifest counts and gzip streams checked, at once."""
    export = tmp_path / "export"
    write_population(export, synth_patients(42, 4, observations=(3, 5)), "bulk")
    obs = export / "Observation.ndjson"
    gz = export / GZIPPED
    gz.write_bytes(gzip.compress(obs.read_bytes()))
    obs.unlink()
    files = job.export_files(str(export))
    listed = json.loads((export / "manifest.json").read_text(encoding="utf-8"))["output"]
    assert [Path(f).name for f in files] == [i["url"].replace("Observation.ndjson", GZIPPED) for i in listed]
    assert GZIPPED in [Path(f).name for f in files]
    assert job.export_files("hdfs:///exports/x/") == ["hdfs:///exports/x/*.{ndjson,ndjson.gz}"]
    lines = gzip.decompress(gz.read_bytes()).splitlines(keepends=True)
    gz.write_bytes(gzip.compress(b"".join(lines[:-1])))  # a resource short of the manifest's count
    with pytest.raises(BadInputError, match=re.escape(f"{gz} has {len(lines) - 1} non-blank lines")):
        job.export_files(str(export))
    (export / "manifest.json").unlink()  # no count: still a complete gzip file is required
    gz.write_bytes(gz.read_bytes()[:-12])
    with pytest.raises(BadInputError, match=re.escape(f"{gz}: not a complete gzip file")):
        job.export_files(str(export))


def test_lines_are_keyed_as_the_local_reader_keys_them() -> None:
    """Verify (no Spark needed): BOM, CRLF, blank lines, a Patient, a resource, a shared one, broken lines."""
    patient = '\ufeff{"resourceType": "Patient", "id": "a"}'
    assert job.key_line(0, "P.ndjson", (patient, 0)) == [("P", "a", 0, 1, '{"resourceType": "Patient", "id": "a"}')]
    obs = '{"resourceType": "Observation", "subject": {"reference": "http://x/fhir/Patient/a"}}\r'
    assert job.key_line(1, "O.ndjson", (obs, 4))[0][:4] == ("R", "a", 1, 5)
    assert job.key_line(1, "O.ndjson", ("  ", 5)) == []
    med = '{"resourceType": "Medication", "id": "m1"}'
    assert job.key_line(2, "M.ndjson", (med, 0))[0][:2] == ("S", "Medication/m1")
    broken = '{"resourceType": "Observation", "subject": {"reference": "Patient/b"}, "v'
    tag, key, _, _, message = job.key_line(1, "O.ndjson", (broken, 1))[0]
    assert (tag, key) == ("X", "b") and message.startswith("O.ndjson line 2:")
    assert job.key_line(1, "O.ndjson", ("[1]", 2))[0][0::4] == (
        "B",
        "line 3: not a FHIR resource (no resourceType); NDJSON holds one resource per line",
    )


def test_groups_become_the_local_readers_records() -> None:
    """Verify the local reader's `where` and errors: a second Patient, no Patient, a poisoned patient, a Bundle."""
    files = ["/x/Patient.ndjson", "/x/Observation.ndjson", "/x/Patient2.ndjson"]
    p, o = '{"resourceType":"Patient","id":"d"}', '{"resourceType":"Observation"}'
    order, rec = job.group_record(files, "d", [("R", "d", 1, 7, o), ("P", "d", 2, 1, p), ("P", "d", 0, 4, p)])
    assert (order, rec.where, rec.error) == (
        (1, 0, 4),
        "/x/Patient.ndjson:4",
        "a second Patient/d at Patient2.ndjson:1",
    )
    order, rec = job.group_record(files, "c", [("R", "c", 1, 9, o), ("R", "c", 1, 3, o)])
    assert order == (2, 1, 3) and rec.where == "/x/Observation.ndjson:3"
    assert rec.error == "no Patient resource for Patient/c in the export; export the Patient type too"
    _, rec = job.group_record(files, "b", [("P", "b", 0, 2, p), ("X", "b", 1, 2, "Observation.ndjson line 2: bad")])
    assert rec.error == "Observation.ndjson line 2: bad" and rec.bundle_json is None
    _, rec = job.group_record(files, "a", [("R", "a", 1, 1, o), ("P", "a", 0, 1, p), ("S", "a", 3, 1, "{}")])
    assert rec.error is None and rec.bundle_json is not None
    assert [e["resource"] for e in json.loads(rec.bundle_json)["entry"]] == [json.loads(p), json.loads(o), {}]
