"""One NDJSON line as every population reader takes it: a resource, its protocol-safe text, or what is wrong.

A population file, a Bulk Data export read locally and the same export read by Spark all read
their lines here, so that a bad line gets the same message whichever path meets it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# Accepted before line 1, as exports from Windows tools often carry one.
BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Line:
    """A parsed line: its text as one protocol line (see protocol_text), its resource, or the problem (resource {})."""

    text: str
    resource: dict[str, Any]
    problem: str | None


def body(raw: bytes, lineno: int) -> bytes:
    """The line's bytes without the byte order mark line 1 may start with."""
    return raw.removeprefix(BOM) if lineno == 1 else raw


def reference_patient(ref: str) -> str | None:
    """The patient id a reference names (`Patient/x`, a URL ending in it, `Patient/x/_history/2`), or None.

    The first `Patient` segment followed by a non-empty one: every reader places a resource by this.
    """
    parts = ref.split("/")
    for j in range(len(parts) - 1):
        if parts[j] == "Patient" and parts[j + 1]:
            return parts[j + 1]
    return None


def protocol_text(text: str) -> str:
    """A resource's JSON text as one protocol line: trimmed, a lone carriage return between tokens made a space.

    A carriage return is valid JSON whitespace, but the worker protocols are one document per line.
    """
    text = text.strip()
    return text.replace("\r", " ") if "\r" in text else text


def parse_line(raw: bytes, lineno: int, bundle_hint: str) -> Line:
    """Line `lineno` of an NDJSON file: one FHIR resource other than a Bundle, or what is wrong with it.

    Positions count from the start of the line (after a byte order mark on line 1); `bundle_hint`
    says what to do instead of putting a Bundle on a line.
    """
    data = body(raw, lineno)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return Line("", {}, f"line {lineno}: not UTF-8 (byte 0x{data[e.start]:02x} at column {e.start + 1})")
    try:
        resource = json.loads(text)
    except json.JSONDecodeError as e:
        return Line(protocol_text(text), {}, f"line {lineno}:{e.colno}: not valid JSON: {e.msg}")
    except RecursionError:
        return Line(protocol_text(text), {}, f"line {lineno}: JSON nested too deeply")
    if not (isinstance(resource, dict) and isinstance(resource.get("resourceType"), str)):
        problem = f"line {lineno}: not a FHIR resource (no resourceType); NDJSON holds one resource per line"
        return Line(protocol_text(text), {}, problem)
    if resource["resourceType"] == "Bundle":
        return Line(protocol_text(text), {}, f"line {lineno}: a Bundle; {bundle_hint}")
    return Line(protocol_text(text), resource, None)
