"""Verify Bulk Data export input: per-type NDJSON files grouped by patient on disk, shared resources, bad lines."""

from __future__ import annotations

import gzip
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from guideline.cli import main as cli
from guideline.core.errors import BadInputError, ExitCode
from guideline.evaluation import bulk
from guideline.evaluation.pushdown import Reads
from guideline.evaluation.records import PatientRecord, open_population
from tools.synth import synth_patients, write_population

# The one code kept in the push-down tests here.
_LOINC_1 = {"system": "http://loinc.org", "code": "1"}


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


# ---------------------------------------------------------------- the manifest's `count`


def _synth_export(folder: Path, seed: int = 24, n: int = 6) -> dict[str, int]:
    """A synth export (its manifest carries each file's `count`): the counts by file name."""
    write_population(folder, synth_patients(seed, n, observations=(3, 8)), "bulk")
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    return {item["url"]: item["count"] for item in manifest["output"]}


def _drop_last_line(path: Path) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]))


def test_manifest_count_is_checked_against_the_file(tmp_path: Path) -> None:
    """Verify: the right counts pass; a truncated file is one error naming manifest, item, file, both numbers."""
    export = tmp_path / "export"
    counts = _synth_export(export)
    with open_population(export) as population:  # every count matches
        assert population.bulk is not None and population.bulk.resources == sum(counts.values())
    _drop_last_line(export / "Observation.ndjson")
    item = sorted(counts).index("Observation.ndjson")
    with pytest.raises(BadInputError) as err:
        open_population(export)
    n = counts["Observation.ndjson"]
    assert err.value.message == (
        f"{export / 'manifest.json'}: output[{item}] says Observation.ndjson holds {n} resources, but "
        f"{export / 'Observation.ndjson'} has {n - 1} non-blank lines: the download is incomplete or the file "
        "changed; download the file again"
    )


def test_manifest_count_counts_non_blank_lines_and_may_be_absent(tmp_path: Path) -> None:
    """Verify that blank lines, a BOM and a last line without line break count as the index counts them."""
    export = tmp_path / "export"
    export.mkdir()
    text = "\ufeff" + json.dumps(_patient("a")) + "\n\n  \r\n" + json.dumps(_patient("b")) + "\n \t\n"
    (export / "Patient.ndjson").write_text(text + json.dumps(_patient("c")), encoding="utf-8")
    (export / "Observation.ndjson").write_text(json.dumps(_obs("a", 1)) + "\n", encoding="utf-8")
    manifest = {
        "transactionTime": "2026-06-01T00:00:00Z",
        "output": [{"type": "Patient", "url": "Patient.ndjson", "count": 3}, {"url": "Observation.ndjson"}],
    }
    (export / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with open_population(export) as population:  # Observation.ndjson has no count: not checked
        assert population.bulk is not None and population.bulk.resources == 4
    for bad, shown in ((4, "4"), (True, "true"), (-1, "-1"), ("3", '"3"')):
        manifest["output"][0]["count"] = bad
        (export / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
        expected = "says Patient.ndjson holds 4 resources, but" if bad == 4 else f"output[0].count is {shown}, not"
        with pytest.raises(BadInputError, match=re.escape(expected)):
            open_population(export)


def test_lines_are_counted_across_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Verify that counting streams block by block: a line split over blocks counts once, blank ones never."""
    path = tmp_path / "x.ndjson"
    path.write_bytes(b"\xef\xbb\xbf\n" + b'{"a": 1}\n\n   \n{"b": 22222}\r\n' * 5 + b" \n{}")
    for block in (1, 2, 3, 7, 64, 1 << 20):
        monkeypatch.setattr(bulk, "_BLOCK", block)
        assert bulk.read_through(path, None, None) == 11, block


def test_count_check_fails_the_cli_with_exit_7(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that `recommend --population` on a truncated download exits 7 with the message, before any engine."""
    export = tmp_path / "export"
    _synth_export(export)
    _drop_last_line(export / "Condition.ndjson")
    rc = cli.main(["recommend", "--population", str(export), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == ExitCode.BAD_INPUT and "Traceback" not in err
    assert f"{export / 'Condition.ndjson'} has " in err and "download the file again" in err
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- gzipped NDJSON


def _gzip(path: Path) -> Path:
    """Replace a file by its gzipped copy, `X.ndjson` -> `X.ndjson.gz`, as a server sends it."""
    out = path.with_name(path.name + ".gz")
    out.write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()
    return out


def test_gzipped_files_read_like_plain_ones(tmp_path: Path) -> None:
    """Verify: an export with some files gzipped (manifest urls naming X.ndjson) gives the plain export's records."""
    _synth_export(tmp_path / "plain", 25, 12)
    _synth_export(tmp_path / "gz", 25, 12)
    _gzip(tmp_path / "gz" / "Patient.ndjson")
    _gzip(tmp_path / "gz" / "Observation.ndjson")
    plain = _records(tmp_path / "plain")
    for export in (tmp_path / "gz", _without_manifest(tmp_path / "gz")):
        with open_population(export) as population:
            assert population.bulk is not None
            unpacked = Path(population.bulk._tmp.name) / "unpacked"
            assert sorted(p.name for p in unpacked.iterdir()) == ["Observation.ndjson", "Patient.ndjson"]
            got = list(population.records())
        assert [r.bundle_json for r in got] == [r.bundle_json for r in plain]
        assert [r.where for r in got] == [f"{export / 'Patient.ndjson.gz'}:{i + 1}" for i in range(12)]
    assert not unpacked.exists()  # removed with the index


def _without_manifest(folder: Path) -> Path:
    (folder / "manifest.json").unlink()
    return folder


def test_bad_lines_in_gzipped_files_name_the_gz_file(tmp_path: Path) -> None:
    """Verify that lines of a .gz file are located by the .gz name and the line numbers of its text."""
    export = tmp_path / "export"
    _write(export, "Patient.ndjson", [_patient("a"), {"resourceType": "Patient"}, _patient("b")])
    _write(
        export,
        "Observation.ndjson",
        [_obs("a", 1), '{"resourceType": "Observation", "subject": {"reference": "Patient/b"}, "v'],
    )
    _gzip(export / "Patient.ndjson")
    _gzip(export / "Observation.ndjson")
    got = [(r.patient, r.where.rsplit("/", 1)[-1], r.error) for r in _records(export)]
    assert got[0] == (None, "Patient.ndjson.gz:2", "line 2: the Patient has no id; give it one")
    assert got[1][:2] == ("a", "Patient.ndjson.gz:1") and got[1][2] is None
    assert got[2][:2] == ("b", "Patient.ndjson.gz:3")
    assert got[2][2] is not None and got[2][2].startswith("Observation.ndjson.gz line 2:")


def test_gzipped_file_is_counted_and_found_by_either_name(tmp_path: Path) -> None:
    """Verify: a count is checked on the decompressed text; a url X.ndjson.gz also finds an unpacked X.ndjson."""
    export = tmp_path / "export"
    counts = _synth_export(export)
    manifest = json.loads((export / "manifest.json").read_text(encoding="utf-8"))
    for item in manifest["output"]:
        item["url"] = f"https://ehr.example/files/{item['url']}.gz"  # as the server offered them
    (export / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    _gzip(export / "Observation.ndjson")  # the others are unpacked
    with open_population(export) as population:
        assert population.bulk is not None and population.bulk.resources == sum(counts.values())
    text = gzip.decompress((export / "Observation.ndjson.gz").read_bytes()).splitlines(keepends=True)
    (export / "Observation.ndjson.gz").write_bytes(gzip.compress(b"".join(text[:-2])))
    with pytest.raises(BadInputError, match=re.escape(f"{export / 'Observation.ndjson.gz'} has {len(text) - 2} non")):
        open_population(export)
    (export / "Condition.ndjson").unlink()
    with pytest.raises(
        BadInputError, match=r"names Condition\.ndjson\.gz, which is not in .* \(nor Condition\.ndjson\)"
    ):
        open_population(export)


def _truncated(data: bytes) -> bytes:
    return data[: len(data) - 12]


def _bad_crc(data: bytes) -> bytes:
    return data[:-8] + bytes([data[-8] ^ 0xFF]) + data[-7:]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_truncated, "not a complete gzip file (Compressed file ended before the end-of-stream marker"),
        (_bad_crc, "not a complete gzip file (CRC check failed"),
        (lambda data: b"", "not a complete gzip file (the file is empty)"),
        (lambda data: data[:20] + b"\xff" * 40 + data[60:], "not a complete gzip file (Error -3 while decompressing"),
        (lambda data: b'{"resourceType": "Patient", "id": "a"}\n', "not a complete gzip file (Not a gzipped file"),
        (lambda data: gzip.compress(b"\x89PNG\r\n\x1a\n\x00"), "a PNG image, not NDJSON"),
    ],
    ids=["truncated", "crc", "empty", "corrupt", "not-gzip", "png-inside"],
)
def test_broken_gzip_files_are_refused_by_name(tmp_path: Path, damage: Any, message: str) -> None:
    """Verify that a damaged .gz file is one BadInputError naming it (never a traceback, never a partial read)."""
    export = tmp_path / "export"
    _synth_export(export, 26, 30)
    (export / "manifest.json").unlink()  # no count: the gzip stream itself must tell
    gz = _gzip(export / "Observation.ndjson")
    gz.write_bytes(damage(gz.read_bytes()))
    with pytest.raises(BadInputError) as err:
        open_population(export)
    assert err.value.message.startswith(f"{gz}: ") and message in err.value.message
    assert "download it again" in err.value.message or "PNG" in message


def test_broken_gzip_fails_the_cli_with_exit_7(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that `recommend --population` on an export with a truncated .gz file exits 7 naming the file."""
    export = tmp_path / "export"
    _synth_export(export)
    gz = _gzip(export / "Observation.ndjson")
    gz.write_bytes(_truncated(gz.read_bytes()))
    rc = cli.main(["recommend", "--population", str(export), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == ExitCode.BAD_INPUT and "Traceback" not in err
    assert f"{gz}: not a complete gzip file" in err and "download it again" in err


def test_plain_and_gzipped_copies_of_one_file_are_refused_without_a_manifest(tmp_path: Path) -> None:
    """Verify that X.ndjson beside X.ndjson.gz (read twice, every patient a duplicate) is refused, not guessed."""
    export = tmp_path / "export"
    _write(export, "Patient.ndjson", [_patient("a")])
    (export / "Patient.ndjson.gz").write_bytes(gzip.compress((export / "Patient.ndjson").read_bytes()))
    with pytest.raises(BadInputError, match=r"holds both Patient\.ndjson and Patient\.ndjson\.gz"):
        open_population(export)


def _reads_loinc_1() -> Reads:
    """The push-down of one retrieve: Observations with code LOINC 1 (Claims, Encounters, ... never read)."""
    return Reads.of_requirements([{"type": "Observation", "codeFilter": [{"path": "code", "code": [_LOINC_1]}]}], {})


def _indexed(export: Path, reads: Reads | None) -> list[tuple[str, str | None, str | None, str | None]]:
    with open_population(export, (lambda: reads) if reads is not None else None) as population:
        return [(r.where, r.patient, r.error, r.bundle_json) for r in population.records()]


def test_blocks_of_skipped_lines_index_as_lines_read_one_by_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verify that a file read in blocks gives the same records whatever the block size: blocks of compact
    skipped lines are only counted, while a BOM, blank lines, a Patient or spaced line among the Claims, a line
    longer than a block and a last line without a line break are each read as before."""
    reads = _reads_loinc_1()
    claim = {"resourceType": "Claim", "patient": {"reference": "Patient/a"}, "use": "claim"}
    claims = [json.dumps(claim, separators=(",", ":"))] * 30
    claims[3] = json.dumps({**claim, "note": "x" * 300}, separators=(",", ":"))
    claims[10] = json.dumps(_patient("b"))
    claims[12] = "   "
    claims[20] = json.dumps(claim)  # `{"resourceType": "Claim"`: skipped, but not by the compact opening
    claims[25] = '{"resourceType":"Claim","patient":{"reference":"Patient/c"}'  # broken: skipped, as before
    export = tmp_path / "export"
    _write(export, "Patient.ndjson", [_patient("a")])
    _write(export, "Claim.ndjson", claims)
    (export / "Claim.ndjson").write_bytes(b"\xef\xbb\xbf" + (export / "Claim.ndjson").read_bytes().rstrip(b"\n"))
    _write(export, "Observation.ndjson", [_obs("a", 1, code={"coding": [_LOINC_1]}), _obs("b", 2)])
    expected = _indexed(export, reads)
    assert [(r[1], r[2]) for r in expected] == [("b", None), ("a", None)]  # Claim.ndjson is read first
    for block in (1, 7, 64, 200):
        monkeypatch.setattr(bulk, "_BLOCK", block)
        assert _indexed(export, reads) == expected, block
    with open_population(export, lambda: reads) as population:
        assert population.bulk is not None
        assert (population.bulk.resources, population.bulk.kept) == (32, 3)  # 29 Claims, the blank line aside


def test_a_broken_line_without_a_kept_code_is_reported_only_with_read_all(tmp_path: Path) -> None:
    """Verify the one change of the raw drop (pushdown.py): a broken Observation line whose raw text holds no
    kept code is dropped unparsed, its patient still placed; without the push-down it fails its patient."""
    reads = _reads_loinc_1()
    export = tmp_path / "export"
    _write(export, "Patient.ndjson", [_patient("a")])
    _write(export, "Observation.ndjson", ['{"resourceType":"Observation","subject":{"reference":"Patient/a"},oops'])
    assert [(r[1], r[2]) for r in _indexed(export, reads)] == [("a", None)]
    ((where, patient, error, _),) = _indexed(export, None)
    assert patient == "a" and error is not None and "Observation.ndjson line 1:" in error and "not valid JSON" in error
