"""Verify `guideline recommend --population`: input forms, bad records, order, workers and output."""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from guideline.cli import main as cli
from guideline.content.cql import Engine
from guideline.content.package import Package, build_package
from guideline.core.config import Config
from guideline.core.errors import ExitCode
from guideline.evaluation.bundles import load_patient_bundle
from guideline.evaluation.patient import recommend
from guideline.evaluation.population import (
    EnginePool,
    PatientResult,
    atomic_output,
    evaluate_population,
    progress_line,
    result_line,
)
from guideline.evaluation.records import open_population
from tests.support.casedata import CASES, CASES_DIR
from tools.synth import as_bundle, synth_patients, write_population

AT = "2026-06-01T12:00:00Z"


@pytest.fixture(scope="module")
def package(config: Config, engine: Engine) -> Package:
    return build_package(config, engine)


@pytest.fixture(scope="module")
def pool2() -> Iterator[EnginePool]:
    with EnginePool(2) as pool:
        yield pool


@pytest.fixture(scope="module")
def cases_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The scenarios as a directory of patient bundles named after their case."""
    out = tmp_path_factory.mktemp("cases")
    for case in CASES:
        shutil.copy(case / "patient.json", out / f"{case.name}.json")
    return out


def _run(pkg: Package, path: Path, pool: EnginePool, **kw: Any) -> list[PatientResult]:
    return list(evaluate_population(pkg, open_population(path).records(), AT, pool, **kw))


def _resource_lines(resources: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(r) for r in resources]


def _patient(pid: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1990-01-01"}


def _gl_condition(pid: str, n: int = 1) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": f"{pid}-gl-{n}",
        "subject": {"reference": f"Patient/{pid}"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "284449005"}]},
        "clinicalStatus": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
        },
    }


# ---------------------------------------------------------------- same results as single-patient recommend


def test_cases_match_single_patient_recommend(
    package: Package, engine: Engine, pool2: EnginePool, cases_dir: Path
) -> None:
    """Verify that population mode gives, for each scenario, exactly `recommend --json`'s document."""
    results = _run(package, cases_dir, pool2, batch_records=5)
    assert [r.error for r in results] == [None] * len(CASES)
    for case, result in zip(CASES, results, strict=True):
        bundle, _ = load_patient_bundle(case / "patient.json")
        assert result.document == recommend(package, bundle, AT, engine), case.name


def test_one_and_two_workers_give_identical_output(package: Package, pool2: EnginePool, tmp_path: Path) -> None:
    """Verify that 1 and 2 workers write byte-identical results for a synthetic population."""
    pop = tmp_path / "pop.ndjson"
    write_population(pop, synth_patients(11, 60, observations=(10, 200)), "ndjson")
    with EnginePool(1) as pool1:
        one = "".join(result_line(r) for r in _run(package, pop, pool1, batch_records=7))
    two = "".join(result_line(r) for r in _run(package, pop, pool2, batch_records=7))
    assert one == two
    assert len(one.splitlines()) == 60


def test_speed_ups_do_not_change_results(package: Package, pool2: EnginePool, tmp_path: Path) -> None:
    """Verify that the worker's population speed-ups give the same documents as its plain evaluation."""
    pop = tmp_path / "pop.ndjson"
    write_population(pop, synth_patients(12, 80, observations=(10, 300)), "ndjson")
    fast = [r.document for r in _run(package, pop, pool2)]
    plain = [r.document for r in _run(package, pop, pool2, plain=True)]
    assert fast == plain
    assert sum(1 for d in fast if d and d["recommendations"]) > 10  # the comparison covers firing patients


def test_input_order_is_kept(package: Package, pool2: EnginePool, tmp_path: Path) -> None:
    """Verify that results come out in file-name order whatever order the workers finish in."""
    # Big and small patients alternate, so later batches often finish before earlier ones.
    names = []
    for i, resources in enumerate(synth_patients(13, 40, observations=(10, 400))):
        name = f"{i:03d}-{resources[0]['id']}.json"
        (tmp_path / name).write_text(json.dumps(as_bundle(resources)), encoding="utf-8")
        names.append(resources[0]["id"])
    results = _run(package, tmp_path, pool2, batch_records=3)
    assert [r.document["patient"] for r in results if r.document] == names


def _cases_as_bulk_export(folder: Path) -> Path:
    """The 48 scenarios as one Bulk Data export: a file per resource type, Medications shared by reference."""
    lines: dict[str, list[str]] = {}
    for case in CASES:
        bundle, _ = load_patient_bundle(case / "patient.json")
        for entry in bundle["entry"]:
            res = entry["resource"]
            lines.setdefault(res["resourceType"], []).append(json.dumps(res))
    folder.mkdir()
    for rtype, text in lines.items():
        (folder / f"{rtype}.ndjson").write_text("\n".join(text) + "\n", encoding="utf-8")
    assert "Medication" in lines  # the export has a shared resource to resolve
    return folder


def test_bulk_export_of_the_cases_gives_the_same_documents(
    package: Package, pool2: EnginePool, cases_dir: Path, tmp_path: Path
) -> None:
    """Verify that the 48 scenarios read from a per-type Bulk export give exactly the documents of their Bundles."""
    export = _cases_as_bulk_export(tmp_path / "export")
    from_bundles = {r.document["patient"]: r.document for r in _run(package, cases_dir, pool2) if r.document}
    with open_population(export) as population:
        from_bulk = list(evaluate_population(package, population.records(), AT, pool2))
    assert [r.error for r in from_bulk] == [None] * len(CASES)
    assert {r.document["patient"]: r.document for r in from_bulk if r.document} == from_bundles


def test_bulk_export_and_grouped_ndjson_give_identical_output(
    package: Package, pool2: EnginePool, tmp_path: Path
) -> None:
    """Verify that `scripts/synth --format bulk` and the grouped NDJSON of the same population give the same bytes."""
    patients = list(synth_patients(15, 120, observations=(10, 150)))
    write_population(tmp_path / "pop.ndjson", iter(patients), "ndjson")
    write_population(tmp_path / "bulk", iter(patients), "bulk")
    grouped = "".join(result_line(r) for r in _run(package, tmp_path / "pop.ndjson", pool2))
    with open_population(tmp_path / "bulk") as population:
        bulk = "".join(result_line(r) for r in evaluate_population(package, population.records(), AT, pool2))
    assert bulk == grouped
    assert len(bulk.splitlines()) == 120 and '"recommendations":[{' in bulk


def test_cli_reads_a_gzipped_export_as_its_text(
    package: Package, pool2: EnginePool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Verify: an export with gzipped files (manifest urls naming X.ndjson) writes the plain population's bytes."""
    patients = list(synth_patients(18, 30, observations=(10, 150)))
    write_population(tmp_path / "pop.ndjson", iter(patients), "ndjson")
    write_population(tmp_path / "bulk", iter(patients), "bulk")
    for name in ("Observation.ndjson", "Patient.ndjson"):  # the others stay plain
        plain = tmp_path / "bulk" / name
        plain.with_name(f"{name}.gz").write_bytes(gzip.compress(plain.read_bytes()))
        plain.unlink()
    expected = "".join(result_line(r) for r in _run(package, tmp_path / "pop.ndjson", pool2))
    out = tmp_path / "gz.ndjson"
    argv = ["--at", AT, "--engine", "js", "--workers", "1", "--out", str(out)]
    assert cli.main(["recommend", "--population", str(tmp_path / "bulk"), *argv]) == ExitCode.OK
    assert "30 evaluated, 0 skipped" in capsys.readouterr().err
    assert out.read_text(encoding="utf-8") == expected and expected.count("\n") == 30


# ---------------------------------------------------------------- bad records


def test_bad_bundle_in_the_middle_is_skipped_and_reported(
    cases_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Verify that a broken file among good ones is reported with its path, skipped, and exits BAD_INPUT."""
    pop = tmp_path / "pop"
    pop.mkdir()
    for name in ("r5-child", "no-gl-metabolic", "r2-galactorrhoea"):
        shutil.copy(cases_dir / f"{name}.json", pop / f"{name}.json")
    (pop / "p-broken.json").write_text('{"resourceType": "Bundle", "type": "collection", "entry": [', encoding="utf-8")
    out = tmp_path / "results.ndjson"
    rc = cli.main(["recommend", "--population", str(pop), "--at", AT, "--out", str(out), "--workers", "2"])
    err = capsys.readouterr().err
    assert rc == ExitCode.BAD_INPUT
    assert f"skipped: {pop / 'p-broken.json'}: line 1:" in err and "not valid JSON" in err
    assert "4 records" in err and "3 evaluated, 1 skipped" in err and "--keep-going" in err
    assert [json.loads(line)["patient"] for line in out.read_text().splitlines()] == [
        "no-gl-metabolic",
        "r2-galactorrhoea",
        "r5-child",
    ]
    assert "Traceback" not in err and "\r" not in err  # no progress bar when stderr is not a terminal
    rc = cli.main(["recommend", "--population", str(pop), "--at", AT, "--out", str(out), "--keep-going"])
    assert rc == ExitCode.OK
    assert len(out.read_text().splitlines()) == 3


def test_bad_line_in_the_middle_of_ndjson(package: Package, pool2: EnginePool, tmp_path: Path) -> None:
    """Verify that a broken NDJSON line skips only the patient it sits in, reported with its line numbers."""
    lines = _resource_lines([_patient("a"), _gl_condition("a")])
    lines += _resource_lines([_patient("b")]) + ['{"resourceType": "Observation", "subject": {"refer']
    lines += _resource_lines([_gl_condition("b"), _patient("c"), _gl_condition("c")])
    pop = tmp_path / "pop.ndjson"
    pop.write_text("\n".join(lines) + "\n", encoding="utf-8")
    results = _run(package, pop, pool2)
    assert [(r.record.patient, r.document is not None) for r in results] == [("a", True), ("b", False), ("c", True)]
    bad = results[1]
    assert bad.record.where == f"{pop}:3-5"
    assert bad.error is not None and bad.error.startswith("line 4:") and "not valid JSON" in bad.error
    assert [r.document["patient"] for r in results if r.document] == ["a", "c"]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        # Resources before their Patient, and a Medication naming no patient, belong to the group.
        (
            [_gl_condition("a"), {"resourceType": "Medication", "id": "m1"}, _patient("a"), _patient("b")],
            [("a", None), ("b", None)],
        ),
        # An absolute reference and a versioned one name the same patient.
        (
            [_patient("a"), {**_gl_condition("a"), "subject": {"reference": "http://x/fhir/Patient/a/_history/2"}}],
            [("a", None)],
        ),
        ([_gl_condition("a")], [("a", "no Patient resource for Patient/a")]),
        ([_patient("a"), _gl_condition("a"), _patient("a")], [("a", "line 3: a second Patient/a (first at line 1)")]),
        ([{"resourceType": "Patient"}, _patient("b")], [(None, "the Patient has no id"), ("b", None)]),
        ([{"resourceType": "Bundle", "type": "collection"}, _patient("b")], [(None, "a Bundle"), ("b", None)]),
        ([[1, 2], _patient("b")], [(None, "not a FHIR resource"), ("b", None)]),
    ],
    ids=["patient-last", "absolute-reference", "no-patient", "two-patients", "no-id", "bundle-line", "not-resource"],
)
def test_ndjson_grouping(tmp_path: Path, lines: list[Any], expected: list[tuple[str | None, str | None]]) -> None:
    """Verify how NDJSON lines are grouped into patients and which groups are refused, and why."""
    pop = tmp_path / "pop.ndjson"
    pop.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n", encoding="utf-8")
    records = list(open_population(pop).records())
    assert [r.patient for r in records] == [e[0] for e in expected]
    for rec, (_, message) in zip(records, expected, strict=True):
        if message is None:
            assert rec.error is None and rec.bundle_json is not None
            assert json.loads(rec.bundle_json)["type"] == "collection"
        else:
            assert rec.error is not None and message in rec.error, rec.error


def test_ndjson_not_utf8_and_bom(tmp_path: Path) -> None:
    """Verify that a BOM on line 1 is accepted and a non-UTF-8 line is reported with its line and byte."""
    pop = tmp_path / "pop.ndjson"
    pop.write_bytes(
        b"\xef\xbb\xbf" + json.dumps(_patient("a")).encode() + b"\n" + b'{"resourceType": "Observation", "x": "\xff"}\n'
    )
    [rec] = list(open_population(pop).records())
    assert rec.patient == "a" and rec.error is not None and "line 2: not UTF-8 (byte 0xff" in rec.error


def test_reading_is_streamed(tmp_path: Path) -> None:
    """Verify that the first patient is available before the rest of the file is read (flat memory)."""
    pop = tmp_path / "pop.ndjson"
    write_population(pop, synth_patients(14, 50, observations=(10, 10)), "ndjson")
    population = open_population(pop)
    first = next(population.records())
    assert first.error is None and first.progress < population.total / 10


def test_missing_population_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that a population path that does not exist exits BAD_INPUT before any worker starts."""
    assert cli.main(["recommend", "--population", str(tmp_path / "nope")]) == ExitCode.BAD_INPUT
    assert "cannot read the population" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--population", "x", "--patient-bundle", "y"],
        ["--patient-bundle", str(CASES_DIR / "r5-child" / "patient.json"), "--workers", "2"],
        ["--patient-bundle", str(CASES_DIR / "r5-child" / "patient.json"), "--keep-going"],
        ["--population", "x", "--workers", "0"],
        ["--patient-bundle", str(CASES_DIR / "r5-child" / "patient.json"), "--engine", "js"],
        ["--population", "x", "--engine", "python"],
    ],
    ids=["both", "workers-single", "keep-going-single", "zero-workers", "engine-single", "unknown-engine"],
)
def test_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that conflicting or invalid population flags are usage errors (exit 2)."""
    assert cli.main(["recommend", *argv]) == ExitCode.USAGE
    assert "Traceback" not in capsys.readouterr().err


# ---------------------------------------------------------------- output


def test_atomic_output(tmp_path: Path) -> None:
    """Verify that the results file appears only when the run succeeds, and no temp file is left behind."""
    out = tmp_path / "results.ndjson"
    with pytest.raises(RuntimeError), atomic_output(out) as f:
        f.write("partial\n")
        raise RuntimeError("stopped")
    assert list(tmp_path.iterdir()) == []
    with atomic_output(out) as f:
        f.write("done\n")
        assert not out.exists()
    assert out.read_text() == "done\n" and list(tmp_path.iterdir()) == [out]


def test_cli_writes_to_stdout_without_out(cases_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that without --out each patient's document is one line on stdout, summary on stderr."""
    rc = cli.main(["recommend", "--population", str(cases_dir), "--at", AT, "--workers", "1"])
    captured = capsys.readouterr()
    assert rc == ExitCode.OK
    docs = [json.loads(line) for line in captured.out.splitlines()]
    assert [d["patient"] for d in docs][:2] == ["bundle-transaction", "gl-adult-no-data"]
    assert len(docs) == len(CASES) and all(set(d) == {"patient", "evaluatedAt", "recommendations"} for d in docs)
    assert f"{len(CASES)} evaluated, 0 skipped" in captured.err and "GLR4Diet" in captured.err


def test_cli_reads_a_bulk_export_and_reports_its_bad_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Verify the CLI on an export: the grouping line, a bad line reported with file and line, exit 7, results kept."""
    export = tmp_path / "export"
    write_population(export, synth_patients(16, 3, observations=(2, 2)), "bulk")
    with (export / "Observation.ndjson").open("a", encoding="utf-8") as f:
        f.write("{broken\n")
    # The manifest counts the line too (a count that does not match is refused before any record is read).
    manifest = json.loads((export / "manifest.json").read_text(encoding="utf-8"))
    for item in manifest["output"]:
        item["count"] += item["url"] == "Observation.ndjson"
    (export / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    out = tmp_path / "r.ndjson"
    rc = cli.main(["recommend", "--population", str(export), "--at", AT, "--workers", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == ExitCode.BAD_INPUT
    files = manifest["output"]
    resources = sum(f["count"] for f in files)
    assert f"population: Bulk Data export of {len(files)} file(s), {resources} resources grouped by patient" in err
    assert f"skipped: {export / 'Observation.ndjson'}:7: line 7:2: not valid JSON" in err
    assert len(out.read_text(encoding="utf-8").splitlines()) == 3


def test_progress_line() -> None:
    """Verify that the progress line shows patients, percent, rate and ETA."""
    line = progress_line(500, 250, 1000, "bytes", 2.0, width=10)
    assert line == "[##........] 500 patients   25%  250/s  ETA 0:06"


def test_batches_start_small_so_small_populations_spread_over_workers() -> None:
    """Verify batch sizes ramp up 4, 8, 16, ... to the limit, and the byte bound still closes a batch early."""
    from guideline.evaluation.population import record_batches
    from guideline.evaluation.records import PatientRecord

    records = [PatientRecord(i, f"r{i}", f"p{i}", "{}") for i in range(150)]
    sizes = [len(b) for b in record_batches(records, 64, 1 << 20)]
    assert sizes == [4, 8, 16, 32, 64, 26]
    assert [r.index for b in record_batches(records, 64, 1 << 20) for r in b] == list(range(150))
    twenty = [len(b) for b in record_batches(records[:20], 64, 1 << 20)]
    assert twenty == [4, 8, 8]  # three batches: both workers of a pool get work
    assert [len(b) for b in record_batches(records[:10], 64, 4)] == [2] * 5  # 2 bytes each: the byte bound wins
