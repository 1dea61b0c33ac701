"""Reading one patient's record: a Bundle holding exactly one Patient, every problem located."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from guideline.core.errors import BadInputError

BUNDLE_TYPES = ("collection", "batch", "transaction")


def load_patient_bundle(path: Path) -> tuple[dict[str, Any], str]:
    """Read a Bundle (collection, batch or transaction) holding exactly one Patient.

    Returns a collection Bundle of the entries' resources (what the engine loads as one
    patient's record) and the Patient's id. Every problem is a BadInputError naming the file.
    """
    shown = str(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise BadInputError(f"{shown}: cannot read the patient bundle: {e.strerror or e}") from None
    try:
        # utf-8-sig: exports from Windows tools often start with a byte-order mark.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BadInputError(
            f"{shown}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); FHIR JSON must be UTF-8"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadInputError(f"{shown}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}") from None
    except RecursionError:
        raise BadInputError(f"{shown}: JSON nested too deeply to be a FHIR Bundle") from None
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
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}
    return bundle, pid


def patient_id(bundle: dict[str, Any]) -> str:
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
