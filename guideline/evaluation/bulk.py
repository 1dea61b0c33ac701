"""Reading a FHIR Bulk Data export folder: per-type NDJSON files grouped by patient through an on-disk index.

A `$export` writes one NDJSON file per resource type (`Patient.ndjson`, `Observation.ndjson`, ...),
ungrouped. One pass over every file records, for each line, where it is (file, byte offset, length)
and which patient it belongs to, in a SQLite database in a temporary folder; the index is then read
patient by patient and each patient's lines are read back from the files by offset. Memory holds one
patient and SQLite's small page cache whatever the size of the export; the disk holds the index
(~60 bytes per resource).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from guideline.core.errors import BadInputError
from guideline.evaluation.bundles import binary_kind, first_text

# Fields that tie a resource to its patient (Observation.subject, AllergyIntolerance.patient, ...).
PATIENT_LINKS = ("subject", "patient")

# What a Bulk Data export folder must hold, for messages.
EXPECTED_BULK = "a Bulk Data export folder (one NDJSON file per resource type, e.g. Patient.ndjson, Observation.ndjson)"

_BOM = b"\xef\xbb\xbf"
_SNIFF_BYTES = 64 * 1024
# Rows are written to the index in chunks of this many lines (one transaction per chunk).
_CHUNK = 20_000
# A reference to a resource in the export, as it appears in a line's JSON text ("Medication/m1").
_REFERENCE = re.compile(r'"reference"\s*:\s*"(?:[^"]*/)?([A-Za-z]+/[A-Za-z0-9\-.]{1,64})"')
# A patient reference inside a line too broken to parse, to know which patient it poisons.
_PATIENT_REF = re.compile(r'"reference"\s*:\s*"(?:[^"]*/)?Patient/([A-Za-z0-9\-.]{1,64})"')


def patient_key(resource: dict[str, Any]) -> str | None:
    """The id of the patient a resource belongs to (`Patient/x`, or a URL ending in it), if it names one."""
    for name in PATIENT_LINKS:
        link = resource.get(name)
        ref = link.get("reference") if isinstance(link, dict) else None
        if isinstance(ref, str):
            parts = ref.split("/")
            # Patient/x, http://host/fhir/Patient/x, Patient/x/_history/2
            for j in range(len(parts) - 1):
                if parts[j] == "Patient" and parts[j + 1]:
                    return parts[j + 1]
    return None


def is_manifest(path: Path) -> bool:
    """Whether a JSON file is a Bulk Data export manifest (an object with `transactionTime` and `output`)."""
    try:
        with path.open("rb") as f:
            head = f.read(_SNIFF_BYTES)
        if b'"output"' not in head:
            return False
        data = json.loads(path.read_bytes().removeprefix(_BOM))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and isinstance(data.get("output"), list) and "transactionTime" in data


def export_files(folder: Path, ndjson: list[Path], manifests: list[Path]) -> list[Path]:
    """The export's data files: those the manifest lists (in its order), or every *.ndjson by name.

    Raises BadInputError for several manifests, a manifest naming a file that is not in the folder,
    or a folder whose data files are binary or hold no line at all.
    """
    if len(manifests) > 1:
        names = ", ".join(p.name for p in manifests)
        raise BadInputError(f"{folder}: several export manifests ({names}); keep the one that belongs to the export")
    files = _manifest_files(folder, manifests[0]) if manifests else sorted(ndjson, key=lambda p: p.name)
    if not files:
        raise BadInputError(f"{folder}: the export manifest lists no output file; expected {EXPECTED_BULK}")
    any_line = False
    for path in files:
        any_line = _check_data_file(path) or any_line
    if not any_line:
        raise BadInputError(f"{folder}: every NDJSON file of the export is empty; expected {EXPECTED_BULK}")
    return files


def _manifest_files(folder: Path, manifest: Path) -> list[Path]:
    data = json.loads(manifest.read_bytes().removeprefix(_BOM))
    files: list[Path] = []
    for i, item in enumerate(data["output"]):
        url = item.get("url") if isinstance(item, dict) else None
        if not isinstance(url, str) or not url:
            raise BadInputError(f"{manifest}: output[{i}] has no url; a manifest lists each file as {{type, url}}")
        # The url is where the server offered the file; the download keeps its last path segment.
        name = Path(urlparse(url).path).name
        path = folder / name
        if not path.is_file():
            raise BadInputError(
                f"{manifest}: output[{i}] names {name}, which is not in {folder}; download every file of the export"
            )
        if path not in files:
            files.append(path)
    return files


def _check_data_file(path: Path) -> bool:
    """Refuse a data file that is not NDJSON text; True when it holds at least one non-blank line."""
    head = first_text(path, "the export file")
    kind = binary_kind(head) if head else None
    if kind is not None:
        raise BadInputError(f"{path}: {kind}, not NDJSON; expected {EXPECTED_BULK}")
    return bool(head)


@dataclass
class Group:
    """One patient of the export (or a line that could not be placed), ready to become a record."""

    where: str  # file:line of the Patient (or of the bad line)
    patient: str | None
    bundle_json: str | None = None
    error: str | None = None


class BulkIndex:
    """The on-disk index of an export: patients in the order of their Patient lines, each with its lines."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self._tmp = tempfile.TemporaryDirectory(prefix="guideline-bulk-")
        self.db = sqlite3.connect(Path(self._tmp.name) / "index.sqlite", isolation_level=None)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "temp_store=FILE", "cache_size=-8000"):
            self.db.execute(f"PRAGMA {pragma}")
        self.db.executescript(
            """
            CREATE TABLE line(pkey TEXT NOT NULL, file INT, off INT, len INT, lineno INT, patient INT);
            CREATE TABLE shared(ref TEXT PRIMARY KEY, file INT, off INT, len INT) WITHOUT ROWID;
            CREATE TABLE poison(pkey TEXT, message TEXT);
            CREATE TABLE bad(file INT, lineno INT, message TEXT);
            """
        )
        start = time.monotonic()
        self.resources = sum(self._scan(i, path) for i, path in enumerate(files))
        self.db.execute("CREATE INDEX line_by_patient ON line(pkey, file, off)")
        self.db.execute("CREATE INDEX poison_by_patient ON poison(pkey)")
        self.patients = self._count("SELECT count(DISTINCT pkey) FROM line") + self._count("SELECT count(*) FROM bad")
        self.has_shared = self._count("SELECT count(*) FROM shared") > 0
        self.seconds = time.monotonic() - start

    def _count(self, sql: str) -> int:
        return int(self.db.execute(sql).fetchone()[0])

    def close(self) -> None:
        """Drop the index (its folder is removed)."""
        self.db.close()
        self._tmp.cleanup()

    # Long: one loop over a file's lines, placing each; splitting it would only pass the row lists around.
    def _scan(self, file: int, path: Path) -> int:
        """Index one data file: each line under its patient, shared resources by reference, bad lines apart."""
        rows: list[tuple[str, int, int, int, int, int]] = []
        shared: list[tuple[str, int, int, int]] = []
        count = 0
        off = 0
        try:
            f = path.open("rb")
        except OSError as e:
            raise BadInputError(f"{path}: cannot read the export file: {e.strerror or e}") from None
        with f:
            for lineno, raw in enumerate(f, 1):
                start, off = off, off + len(raw)
                body = raw.removeprefix(_BOM) if lineno == 1 else raw
                if not body.strip():
                    continue
                start += len(raw) - len(body)
                count += 1
                resource, problem = _parse(body, lineno)
                if problem is not None:
                    m = _PATIENT_REF.search(body.decode("utf-8", "replace"))
                    if m is not None:
                        self.db.execute("INSERT INTO poison VALUES (?, ?)", (m[1], f"{path.name} {problem}"))
                    else:
                        self.db.execute("INSERT INTO bad VALUES (?, ?, ?)", (file, lineno, problem))
                    continue
                rtype = resource["resourceType"]
                if rtype == "Patient":
                    rid = resource.get("id")
                    key = rid if isinstance(rid, str) and rid else None
                    if key is None:
                        self.db.execute(
                            "INSERT INTO bad VALUES (?, ?, ?)",
                            (file, lineno, f"line {lineno}: the Patient has no id; give it one"),
                        )
                        continue
                    rows.append((key, file, start, len(body), lineno, 1))
                else:
                    key = patient_key(resource)
                    if key is not None:
                        rows.append((key, file, start, len(body), lineno, 0))
                    elif isinstance(resource.get("id"), str):
                        shared.append((f"{rtype}/{resource['id']}", file, start, len(body)))
                if len(rows) >= _CHUNK or len(shared) >= _CHUNK:
                    self._flush(rows, shared)
            self._flush(rows, shared)
        return count

    def _flush(self, rows: list[tuple[str, int, int, int, int, int]], shared: list[tuple[str, int, int, int]]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany("INSERT INTO line VALUES (?, ?, ?, ?, ?, ?)", rows)
        self.db.executemany("INSERT OR IGNORE INTO shared VALUES (?, ?, ?, ?)", shared)
        self.db.execute("COMMIT")
        rows.clear()
        shared.clear()

    def groups(self) -> Iterator[Group]:
        """Lines that could not be placed first, then every patient in Patient-line order, then groups without one."""
        for file, lineno, message in self.db.execute("SELECT file, lineno, message FROM bad ORDER BY file, lineno"):
            yield Group(f"{self.files[file]}:{lineno}", None, error=message)
        fds = [os.open(p, os.O_RDONLY) for p in self.files]
        try:
            order = self.db.execute(
                "SELECT pkey, min(CASE WHEN patient = 1 THEN file * 4294967296 + lineno END) AS first, "
                "min(file * 4294967296 + lineno) FROM line GROUP BY pkey "
                "ORDER BY first IS NULL, first, 3"
            )
            # SQLite reads on while other statements of the same connection run (nothing is written now).
            for key, first, _ in order:
                yield self._group(fds, key, first is not None)
        finally:
            for fd in fds:
                os.close(fd)

    def _group(self, fds: list[int], key: str, has_patient: bool) -> Group:
        rows = self.db.execute(
            "SELECT file, off, len, lineno, patient FROM line WHERE pkey = ? ORDER BY patient DESC, file, off", (key,)
        ).fetchall()
        file, _, _, lineno, _ = rows[0]
        group = Group(f"{self.files[file]}:{lineno}", key)
        if not has_patient:
            group.error = f"no Patient resource for Patient/{key} in the export; export the Patient type too"
            return group
        if sum(r[4] for r in rows) > 1:
            second = rows[1]
            group.error = f"a second Patient/{key} at {self.files[second[0]].name}:{second[3]}"
            return group
        poisoned = self.db.execute("SELECT message FROM poison WHERE pkey = ? LIMIT 1", (key,)).fetchone()
        if poisoned is not None:
            group.error = poisoned[0]
            return group
        texts = [_text(os.pread(fds[f], n, off)) for f, off, n, _, _ in rows]
        if self.has_shared:  # scanning every resource for references costs ~30 % of reading
            texts += self._shared(fds, texts)
        group.bundle_json = (
            '{"resourceType":"Bundle","type":"collection","entry":['
            + ",".join(f'{{"resource":{t}}}' for t in texts)
            + "]}"
        )
        return group

    def _shared(self, fds: list[int], texts: list[str]) -> list[str]:
        """The export's patient-less resources (Medication, ...) that the patient's resources refer to, transitively."""
        seen: set[str] = set()
        out: list[str] = []
        todo = [ref for t in texts for ref in _REFERENCE.findall(t) if not ref.startswith("Patient/")]
        while todo:
            ref = todo.pop(0)
            if ref in seen:
                continue
            seen.add(ref)
            row = self.db.execute("SELECT file, off, len FROM shared WHERE ref = ?", (ref,)).fetchone()
            if row is not None:
                text = _text(os.pread(fds[row[0]], row[2], row[1]))
                out.append(text)
                todo += [r for r in _REFERENCE.findall(text) if not r.startswith("Patient/")]
        return out


def _text(raw: bytes) -> str:
    # A lone carriage return between tokens is valid JSON but would split a protocol line.
    text = raw.decode("utf-8").strip()
    return text.replace("\r", " ") if "\r" in text else text


def _parse(raw: bytes, lineno: int) -> tuple[dict[str, Any], str | None]:
    """The line's resource, or what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return {}, f"line {lineno}: not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
    try:
        resource = json.loads(text)
    except json.JSONDecodeError as e:
        return {}, f"line {lineno}:{e.colno}: not valid JSON: {e.msg}"
    except RecursionError:
        return {}, f"line {lineno}: JSON nested too deeply"
    if not (isinstance(resource, dict) and isinstance(resource.get("resourceType"), str)):
        return {}, f"line {lineno}: not a FHIR resource (no resourceType); NDJSON holds one resource per line"
    if resource["resourceType"] == "Bundle":
        return {}, f"line {lineno}: a Bundle; an export's NDJSON holds one resource per line"
    return resource, None
