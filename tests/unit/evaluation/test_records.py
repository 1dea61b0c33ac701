"""Verify how a population input is opened: what is refused at once, and what stays a bad record."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from guideline.core.errors import BadInputError
from guideline.evaluation.bundles import binary_kind, load_patient_bundle
from guideline.evaluation.records import open_population

PATIENT = {"resourceType": "Patient", "id": "a"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"\n  \r\n\t\n", "the file is empty"),
        (b"\xef\xbb\xbf\n\n", "the file is empty"),
        (b" " * 70_000 + b"\n", "the file is empty"),  # longer than one sniffed chunk
        (gzip.compress(b'{"resourceType": "Patient"}\n'), "a gzip archive"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "a PNG image"),
        (b"\xff\xfe{\x00", "UTF-16 text"),
        (b'{"a": 1}\x00\n', "binary data"),
        (b'{\n  "resourceType": "Bundle"\n}\n', "an indented JSON document"),
        (b"id,birthDate\n1,2000-01-01\n", "line 1 is not JSON"),
        (b"<Patient xmlns='http://hl7.org/fhir'/>\n", "line 1 is not JSON"),
    ],
    ids=["empty", "blank-lines", "bom-only", "long-blank", "gzip", "png", "utf16", "nul", "indented", "csv", "xml"],
)
def test_ndjson_that_is_not_input_is_refused_at_once(tmp_path: Path, content: bytes, message: str) -> None:
    """Verify that a file in which nothing is NDJSON is a BadInputError naming it, before any record is read."""
    path = tmp_path / "pop.ndjson"
    path.write_bytes(content)
    with pytest.raises(BadInputError) as err:
        open_population(path)
    assert err.value.message.startswith(f"{path}: ") and message in err.value.message
    assert "\n" not in err.value.message


@pytest.mark.parametrize(
    "first",
    [b'{"resourceType": "Patient", "id": ', b"[1, 2]", b"42"],
    ids=["broken-object", "array", "number"],
)
def test_a_bad_first_line_that_is_json_like_stays_a_bad_record(tmp_path: Path, first: bytes) -> None:
    """Verify that a damaged first resource is skipped as one record, and the patients after it still count."""
    path = tmp_path / "pop.ndjson"
    path.write_bytes(first + b"\n" + json.dumps(PATIENT).encode() + b"\n")
    records = list(open_population(path).records())
    assert [r.error is None for r in records] == [False, True]


def test_folder_without_bundles_is_refused(tmp_path: Path) -> None:
    """Verify that a folder with no *.json nor *.ndjson (hidden files, subfolders do not count) is refused."""
    (tmp_path / ".hidden.json").write_text("{}", encoding="utf-8")
    (tmp_path / "sub.json").mkdir()
    with pytest.raises(BadInputError, match=r"no \*\.json nor \*\.ndjson file in this folder; expected a folder"):
        open_population(tmp_path)
    # A folder of NDJSON files is a Bulk Data export, even of one file holding every type.
    (tmp_path / "all.ndjson").write_text(json.dumps(PATIENT) + "\n", encoding="utf-8")
    with open_population(tmp_path) as population:
        assert population.kind == "bulk" and [r.patient for r in population.records()] == ["a"]


def test_ndjson_with_bom_and_leading_blank_lines_is_accepted(tmp_path: Path) -> None:
    """Verify that the up-front check lets through a BOM and blank lines before the first resource."""
    path = tmp_path / "pop.ndjson"
    path.write_bytes(b"\xef\xbb\xbf\n\n" + json.dumps(PATIENT).encode() + b"\n")
    [record] = list(open_population(path).records())
    assert record.patient == "a" and record.error is None


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\x1f\x8b\x08\x00", "a gzip archive"),
        (b"PK\x03\x04", "a ZIP archive"),
        (b"%PDF-1.7", "a PDF document"),
        (b"\xff\xd8\xff\xe0", "a JPEG image"),
        (b'{"resourceType": "Bundle"}', None),
        (b"\xef\xbb\xbf{}", None),
        (b"caf\xe9", None),  # Latin-1 text: left to the UTF-8 check, which says where the byte is
    ],
)
def test_binary_kind(head: bytes, kind: str | None) -> None:
    """Verify which leading bytes are named as a kind of file, and that JSON text is not."""
    got = binary_kind(head)
    assert got == kind if kind is None else got is not None and got.startswith(kind)


def test_patient_bundle_folder_and_binary_are_one_line_errors(tmp_path: Path) -> None:
    """Verify that load_patient_bundle names a folder, an archive and blank content plainly."""
    with pytest.raises(BadInputError, match="a folder, not a patient Bundle file"):
        load_patient_bundle(tmp_path)
    gz = tmp_path / "package.tgz"
    gz.write_bytes(gzip.compress(b"x"))
    with pytest.raises(BadInputError, match="a gzip archive"):
        load_patient_bundle(gz)
    blank = tmp_path / "blank.json"
    blank.write_bytes(b"  \n")
    with pytest.raises(BadInputError, match="the file is empty"):
        load_patient_bundle(blank)


def test_gzipped_ndjson_reads_as_its_text(tmp_path: Path) -> None:
    """Verify: pop.ndjson.gz gives pop.ndjson's records, located by the .gz name; its copy goes with close()."""
    patients = [json.dumps({"resourceType": "Patient", "id": f"p{i}"}) for i in range(3)]
    text = ("\n".join([patients[0], "not json", *patients[1:]]) + "\n").encode()
    (tmp_path / "pop.ndjson").write_bytes(text)
    gz = tmp_path / "pop.ndjson.gz"
    gz.write_bytes(gzip.compress(text))
    plain = list(open_population(tmp_path / "pop.ndjson").records())
    with open_population(gz) as population:
        assert population.kind == "ndjson" and population.path == gz and population.text.read_bytes() == text
        assert population.total == len(text) and population.unit == "bytes"
        got = list(population.records())
    assert not population.text.exists() and not population.text.parent.exists()
    assert [(r.where, r.patient, r.bundle_json, r.error) for r in got] == [
        (r.where.replace("pop.ndjson", "pop.ndjson.gz"), r.patient, r.bundle_json, r.error) for r in plain
    ]
    assert got[0].where == f"{gz}:1-2" and got[0].error is not None and got[0].error.startswith("line 2:1: not valid")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (gzip.compress(b'{"resourceType": "Patient", "id": "a"}\n')[:-10], "not a complete gzip file ("),
        (b"", "not a complete gzip file (the file is empty)"),
        (b'{"resourceType": "Patient", "id": "a"}\n', "not a complete gzip file (Not a gzipped file"),
        (gzip.compress(b"\n\n"), "the file is empty (no NDJSON lines)"),
        (gzip.compress(b'{\n  "resourceType": "Bundle"\n}\n'), "an indented JSON document"),
        (gzip.compress(gzip.compress(b"{}\n")), "a gzip archive"),
    ],
    ids=["truncated", "empty-file", "not-gzip", "no-lines", "indented", "gzip-in-gzip"],
)
def test_gzipped_ndjson_that_is_not_input_is_refused(tmp_path: Path, content: bytes, message: str) -> None:
    """Verify that a broken .gz population, or one whose text is not NDJSON, is one error naming the .gz file."""
    gz = tmp_path / "pop.ndjson.gz"
    gz.write_bytes(content)
    with pytest.raises(BadInputError) as err:
        open_population(gz)
    assert err.value.message.startswith(f"{gz}: ") and message in err.value.message
