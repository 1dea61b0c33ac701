"""Reading one patient's record: a Bundle holding exactly one Patient, every problem located."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from guideline.core.errors import BadInputError
from guideline.core.fhir import collection_bundle

BUNDLE_TYPES = ("collection", "batch", "transaction")

# Leading bytes of files people pass by mistake where FHIR JSON is expected (a built package, a
# screenshot, a zipped export); naming the kind says more than "byte 0x8b is not UTF-8".
_MAGIC = (
    (b"\x1f\x8b", "a gzip archive (such as a FHIR package .tgz)"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"%PDF-", "a PDF document"),
    (b"\xff\xfe", "UTF-16 text (save it as UTF-8)"),
    (b"\xfe\xff", "UTF-16 text (save it as UTF-8)"),
)


def first_text(path: Path, what: str, sniff: int = 64 * 1024) -> bytes:
    """The first bytes of `path` after a UTF-8 BOM and any leading whitespace (b"" for an empty file).

    Enough to tell an empty file, a binary one (see binary_kind) or the start of the first line,
    without reading a large file whole. `what` names the file in the error ("the population").
    """
    try:
        with path.open("rb") as f:
            head = f.read(sniff).removeprefix(b"\xef\xbb\xbf")
            # Skip leading whitespace however long, so a file of blank lines is found empty.
            while head and not head.strip():
                head = f.read(sniff)
    except OSError as e:
        raise BadInputError(f"{path}: cannot read {what}: {e.strerror or e}") from None
    return head


def binary_kind(head: bytes) -> str | None:
    """What a file starting with `head` is, when it is plainly not JSON text (else None)."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    # JSON text never holds a NUL byte (control characters must be escaped), binary data nearly always does.
    return "binary data" if b"\x00" in head else None


def _read_json(path: Path, shown: str) -> Any:
    """The file's JSON; a BadInputError naming the file when it is a folder, unreadable, empty or not JSON text."""
    if path.is_dir():
        raise BadInputError(f"{shown}: a folder, not a patient Bundle file; give the Bundle's .json file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise BadInputError(f"{shown}: cannot read the patient bundle: {e.strerror or e}; check the path") from None
    if not raw.strip():
        raise BadInputError(f"{shown}: the file is empty (not valid JSON); it must hold one FHIR Bundle")
    kind = binary_kind(raw[:4096])
    if kind is not None:
        raise BadInputError(f"{shown}: {kind}, not a FHIR Bundle; give a patient Bundle in JSON")
    try:
        # utf-8-sig: exports from Windows tools often start with a byte-order mark.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BadInputError(
            f"{shown}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); FHIR JSON must be UTF-8"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise BadInputError(f"{shown}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}") from None
    except RecursionError:
        raise BadInputError(f"{shown}: JSON nested too deeply to be a FHIR Bundle") from None


def load_patient_bundle(path: Path) -> tuple[dict[str, Any], str]:
    """Read a Bundle (collection, batch or transaction) holding exactly one Patient.

    Returns a collection Bundle of the entries' resources (what the engine loads as one
    patient's record) and the Patient's id. Every problem is a BadInputError naming the file.
    """
    shown = str(path)
    data = _read_json(path, shown)
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        found = data.get("resourceType") if isinstance(data, dict) else type(data).__name__
        raise BadInputError(
            f"{shown}: not a FHIR Bundle (resourceType is {found!r}); "
            "wrap the patient's resources in a Bundle of type collection"
        )
    btype = data.get("type")
    if btype not in BUNDLE_TYPES:
        raise BadInputError(f"{shown}: Bundle type {btype!r} is not supported; use one of {', '.join(BUNDLE_TYPES)}")
    entries = data.get("entry", [])
    if not isinstance(entries, list):
        raise BadInputError(f"{shown}: Bundle.entry must be a list")
    resources: list[dict[str, Any]] = []
    patients: list[tuple[int, dict[str, Any], str | None]] = []
    for i, entry in enumerate(entries):
        res = entry.get("resource") if isinstance(entry, dict) else None
        if res is None and btype != "collection":
            continue  # e.g. a DELETE or GET in a batch carries no resource
        if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
            raise BadInputError(f"{shown}: entry[{i}] has no resource with a resourceType")
        if res["resourceType"] == "Patient":
            full_url = entry.get("fullUrl") if isinstance(entry, dict) else None
            patients.append((i, res, full_url if isinstance(full_url, str) else None))
        resources.append(res)
    if not patients:
        raise BadInputError(f"{shown}: the Bundle holds no Patient; it must hold exactly one")
    if len(patients) > 1:
        where = ", ".join(f"entry[{i}] (id {p.get('id', '?')})" for i, p, _ in patients)
        raise BadInputError(
            f"{shown}: the Bundle holds {len(patients)} Patients ({where}); "
            "it must hold exactly one: split it into one Bundle per patient"
        )
    _, patient, full_url = patients[0]
    pid = patient.get("id")
    if not isinstance(pid, str) or not pid:
        # A transaction may identify the Patient only by fullUrl (urn:uuid:...); use its tail.
        tail = full_url.rsplit(":", 1)[-1].rsplit("/", 1)[-1] if full_url else ""
        if not tail:
            raise BadInputError(f"{shown}: the Patient has no id (and no fullUrl); give it an id")
        patient = {**patient, "id": tail}
        resources = [patient if r.get("resourceType") == "Patient" else r for r in resources]
        pid = tail
    return collection_bundle(resources), pid


def patient_id(bundle: dict[str, Any]) -> str:
    """The id of the one Patient in an already-read Bundle; BadInputError unless exactly one has an id."""
    patients = [
        e["resource"]
        for e in bundle.get("entry", [])
        if isinstance(e, dict)
        and isinstance(e.get("resource"), dict)
        and e["resource"].get("resourceType") == "Patient"
    ]
    if len(patients) != 1 or not isinstance(patients[0].get("id"), str):
        raise BadInputError(f"the bundle must hold exactly one Patient with an id (found {len(patients)} Patients)")
    pid: str = patients[0]["id"]
    return pid
