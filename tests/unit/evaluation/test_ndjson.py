"""Verify the one NDJSON line reader: resources, protocol-safe text, and a located message for each bad line."""

from __future__ import annotations

import pytest

from guideline.evaluation.ndjson import BOM, parse_line, protocol_text

HINT = "put one resource per line"


def test_a_resource_line_gives_its_resource_and_one_line_text() -> None:
    """Verify that a good line parses, loses a line-1 byte order mark, and keeps no line break inside."""
    line = parse_line(BOM + b'{"resourceType":"Patient",\r"id":"p"}\r\n', 1, HINT)
    assert line.problem is None
    assert line.resource == {"resourceType": "Patient", "id": "p"}
    assert line.text == '{"resourceType":"Patient", "id":"p"}'
    assert protocol_text(" {}\n") == "{}"


@pytest.mark.parametrize(
    ("raw", "lineno", "problem"),
    [
        (b'{"resourceType":"Patient"}\xff\n', 3, "line 3: not UTF-8 (byte 0xff at column 27)"),
        # The byte order mark is not the bad byte: the message names the one after it.
        (BOM + b"{\xff}\n", 1, "line 1: not UTF-8 (byte 0xff at column 2)"),
        (b'  {"resourceType": }\n', 2, "line 2:20: not valid JSON: Expecting value"),
        (b'{"id": "x"}\n', 4, "line 4: not a FHIR resource (no resourceType); NDJSON holds one resource per line"),
        (b'{"resourceType": "Bundle"}\n', 5, f"line 5: a Bundle; {HINT}"),
        (b"[" * 100_000 + b"\n", 6, "line 6: JSON nested too deeply"),
    ],
)
def test_a_bad_line_says_where_and_what(raw: bytes, lineno: int, problem: str) -> None:
    """Verify that each kind of bad line gets its message, located by line (and column where there is one)."""
    line = parse_line(raw, lineno, HINT)
    assert (line.problem, line.resource) == (problem, {})
