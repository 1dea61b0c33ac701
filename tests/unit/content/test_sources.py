"""Verify strict JSON reading of source files: located findings for every problem, never an exception."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guideline.content.sources import (
    MAX_SOURCE_BYTES,
    is_resource,
    not_a_resource,
    parse_json_bytes,
    read_json_file,
    rel,
)
from guideline.core.errors import Finding

SHOWN = "fhir_resources/library/library-X.json"


def _one(findings: list[Finding]) -> Finding:
    assert len(findings) == 1, findings
    return findings[0]


def test_valid_json_parses_without_findings() -> None:
    """Verify that a well-formed UTF-8 object parses, non-ASCII text included."""
    data, findings = parse_json_bytes(
        '{"resourceType": "Library", "title": "Lipodystrophie \u2013 r\u00e9sum\u00e9"}'.encode(), SHOWN
    )
    assert findings == []
    assert data["title"].endswith("r\u00e9sum\u00e9")


@pytest.mark.parametrize("raw", [b"", b"   \n\t ", b"\n"])
def test_empty_files_are_an_error(raw: bytes) -> None:
    """Verify that an empty or whitespace-only file is one error saying what to do."""
    data, findings = parse_json_bytes(raw, SHOWN)
    f = _one(findings)
    assert data is None
    assert (f.severity, f.file, f.location, f.layer) == ("error", SHOWN, "", "json")
    assert "file is empty" in f.message


def test_a_byte_order_mark_is_an_error_at_1_1() -> None:
    """Verify that a UTF-8 BOM is refused at 1:1 with the fix (save without BOM)."""
    data, findings = parse_json_bytes(b'\xef\xbb\xbf{"resourceType": "Library"}', SHOWN)
    f = _one(findings)
    assert data is None and f.location == "1:1"
    assert "byte-order mark" in f.message and "without BOM" in f.message


@pytest.mark.parametrize(
    ("raw", "location", "byte"),
    [
        (b'{"title": "caf\xe9"}', "1:15", "0xe9"),  # Latin-1
        (b'{\n  "a": 1,\n  "title": "x\xff"\n}', "3:14", "0xff"),
        (b'\xff\xfe{\x00"\x00', "1:1", "0xff"),  # UTF-16 with its BOM
    ],
    ids=["latin1", "third-line", "utf16"],
)
def test_non_utf8_is_located_by_line_and_column(raw: bytes, location: str, byte: str) -> None:
    """Verify that an invalid UTF-8 byte is reported at its line:col with the byte's value."""
    data, findings = parse_json_bytes(raw, SHOWN)
    f = _one(findings)
    assert data is None and f.location == location
    assert f"byte {byte} is not valid UTF-8" in f.message


@pytest.mark.parametrize(
    ("raw", "location", "what"),
    [
        (b'{"a": 1,}', "1:9", "Expecting property name"),
        (b'{\n  "a": 1\n  "b": 2\n}', "3:3", "Expecting ','"),
        (b'{"a": 1} trailing', "1:10", "Extra data"),
        (b"{'a': 1}", "1:2", "Expecting property name"),
        (b'{"a": "unterminated', "1:7", "Unterminated string"),
    ],
)
def test_invalid_json_is_located(raw: bytes, location: str, what: str) -> None:
    """Verify that JSON syntax errors are reported at line:col with the parser's reason."""
    data, findings = parse_json_bytes(raw, SHOWN)
    f = _one(findings)
    assert data is None and f.location == location
    assert f.message.startswith(f"invalid JSON: {what}")


def test_absurdly_deep_nesting_is_an_error_not_a_crash() -> None:
    """Verify that nesting deep enough to exhaust recursion is a finding, not a RecursionError."""
    raw = b"[" * 100_000 + b"]" * 100_000
    data, findings = parse_json_bytes(raw, SHOWN)
    assert data is None and "nested too deeply" in _one(findings).message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"resourceType": "Library"}, True),
        ({"resourceType": 5}, False),
        ({"id": "x"}, False),
        ([{"resourceType": "Library"}], False),
        ("Library", False),
        (None, False),
    ],
)
def test_is_resource(data: object, expected: bool) -> None:
    """Verify that only a JSON object with a string resourceType counts as a resource."""
    assert is_resource(data) is expected


def test_not_a_resource_finding() -> None:
    """Verify that the not-a-resource finding is an error at $ saying what was expected."""
    f = not_a_resource(SHOWN)
    assert (f.severity, f.file, f.location, f.layer) == ("error", SHOWN, "$", "json")
    assert "expected a JSON object with a string 'resourceType'" in f.message


def test_read_json_file_reads_and_parses(tmp_path: Path) -> None:
    """Verify that a file is read and parsed, and a top-level array still parses (the caller checks shape)."""
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"resourceType": "Library"}), encoding="utf-8")
    assert read_json_file(path, SHOWN) == ({"resourceType": "Library"}, [])
    path.write_text("[1, 2]", encoding="utf-8")
    data, findings = read_json_file(path, SHOWN)
    assert data == [1, 2] and findings == [] and not is_resource(data)


def test_read_json_file_problems_go_through_parse(tmp_path: Path) -> None:
    """Verify that reading a file reports the same located findings as parsing its bytes."""
    path = tmp_path / "bom.json"
    path.write_bytes(b'\xef\xbb\xbf{"resourceType": "Library"}')
    data, findings = read_json_file(path, SHOWN)
    assert data is None and _one(findings).location == "1:1"


def test_missing_file_and_directory_are_findings(tmp_path: Path) -> None:
    """Verify that a missing path or a directory is a 'cannot read file' finding, not an OSError."""
    for path, reason in ((tmp_path / "nope.json", "No such file"), (tmp_path, "Is a directory")):
        data, findings = read_json_file(path, SHOWN)
        f = _one(findings)
        assert data is None and f.file == SHOWN
        assert f.message.startswith("cannot read file:") and reason in f.message


def test_too_large_files_are_refused_before_reading(tmp_path: Path) -> None:
    """Verify that a file over the limit is refused with its size and the limit, the default naming one resource."""
    path = tmp_path / "big.json"
    path.write_bytes(b'{"a": "' + b"x" * 100 + b'"}')
    data, findings = read_json_file(path, SHOWN, max_bytes=50)
    msg = _one(findings).message
    assert data is None
    assert "file is 109 bytes, over the 50-byte limit for a knowledge package" in msg and "split it" in msg
    assert read_json_file(path, SHOWN, max_bytes=109)[1] == []  # the limit itself is allowed


def test_the_default_limit_is_per_resource(tmp_path: Path) -> None:
    """Verify that the default limit is MAX_SOURCE_BYTES and is described as the limit for one resource."""
    path = tmp_path / "huge.json"
    with path.open("wb") as f:
        f.truncate(MAX_SOURCE_BYTES + 1)  # sparse: no 5 MB written
    data, findings = read_json_file(path, SHOWN)
    msg = _one(findings).message
    assert data is None and f"over the {MAX_SOURCE_BYTES}-byte limit for one resource" in msg


def test_rel_shows_paths_under_the_root_relative(tmp_path: Path) -> None:
    """Verify that paths inside the root are shown relative to it and others as given."""
    root = tmp_path.resolve()
    assert rel(root, tmp_path / "cql" / "A.cql") == str(Path("cql") / "A.cql")
    assert rel(root / "sub", tmp_path / "x.json") == str(tmp_path / "x.json")


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_json_constants_are_rejected_with_their_place(token: str) -> None:
    """Verify that NaN/Infinity (accepted by Python's json, not by JSON or FHIR) are a located error."""
    raw = f'{{\n  "resourceType": "Observation",\n  "valueDecimal": {token}\n}}'.encode()
    data, findings = parse_json_bytes(raw, "obs.json")
    assert data is None
    [f] = findings
    assert (f.file, f.location, f.layer) == ("obs.json", "3:19", "json")
    assert token in f.message and "not JSON" in f.message
