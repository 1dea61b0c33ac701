"""Reading a population: a directory of patient Bundles or NDJSON grouped by patient, streamed, bad records located."""

from __future__ import annotations

import itertools
import json
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guideline.core.errors import BadInputError
from guideline.core.fhir import collection_bundle_json
from guideline.evaluation import ndjson
from guideline.evaluation.bulk import BulkIndex, gunzip, is_data_file, is_manifest, patient_key
from guideline.evaluation.bundles import binary_kind, first_text, load_patient_bundle
from guideline.evaluation.pushdown import Reads


@dataclass
class PatientRecord:
    """One patient read from the population, or why it cannot be evaluated."""

    index: int  # 0-based, in input order
    where: str  # file, or file:line / file:first-last for NDJSON
    patient: str | None = None  # Patient.id
    bundle_json: str | None = None  # one collection Bundle, as JSON text without line breaks
    error: str | None = None
    progress: int = 0  # input consumed up to the end of this record, in Population.unit


@dataclass
class Population:
    """An opened population input: a directory of patient bundles, an NDJSON file or a Bulk Data export."""

    path: Path  # as given: named in every message
    kind: str  # "directory" | "ndjson" | "bulk"
    total: int  # the size of the input in `unit`, for progress and ETA
    unit: str  # "files" | "bytes" | "patients"
    _files: list[Path] = field(default_factory=list, repr=False)
    bulk: BulkIndex | None = field(default=None, repr=False)
    # A gzipped NDJSON file's decompressed copy, in a temporary folder this population owns.
    _unpacked: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)
    _text: Path | None = field(default=None, repr=False)
    # What the logic reads (see pushdown.py): asked for once, when a reader first needs it; None reads everything.
    want: Callable[[], Reads] | None = field(default=None, repr=False)

    @property
    def reads(self) -> Reads:
        """What the readers skip: `want()` (once), or nothing when the push-down is off."""
        if self._reads is None:
            self._reads = self.want() if self.want is not None else Reads.all()
        return self._reads

    _reads: Reads | None = field(default=None, repr=False)

    @property
    def text(self) -> Path:
        """Where an NDJSON population's text is read: `path`, or the decompressed copy of a `.gz` file."""
        return self._text or self.path

    def records(self) -> Iterator[PatientRecord]:
        """The patients in input order, read one at a time (memory does not grow with the input)."""
        if self.bulk is not None:
            return _bulk_records(self.bulk)
        if self.kind == "directory":
            return _directory_records(self._files)
        return _ndjson_records(self.text, self.path, reads=self.reads)

    def close(self) -> None:
        """Drop what opening made on disk (a Bulk export's index, a .gz file's copy); records cannot be read after."""
        if self.bulk is not None:
            self.bulk.close()
        if self._unpacked is not None:
            self._unpacked.cleanup()

    def __enter__(self) -> Population:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# What --population takes, for messages about a PATH in which nothing is recognised as input.
EXPECTED = (
    "a folder of patient Bundles (*.json), an NDJSON file of FHIR resources grouped by patient (or gzipped, "
    "*.ndjson.gz), or a Bulk Data export folder (one NDJSON file per resource type, *.ndjson or *.ndjson.gz)"
)

# How much of an NDJSON file is looked at before starting: enough to tell text from an archive or image.

BUNDLE_HINT = "NDJSON holds one resource per line (or pass a directory of Bundles)"
# What stands for a line the push-down dropped unparsed (pushdown.Reads.drops): a resource of no type kept.
_UNPARSED: dict[str, Any] = {"resourceType": ""}


def open_population(path: Path, want: Callable[[], Reads] | None = None) -> Population:
    """A directory of `*.json` patient Bundles (in file-name order), an NDJSON file, or a Bulk Data export.

    A folder holding `*.ndjson` (or `*.ndjson.gz`) files is a Bulk Data export (optionally with its
    manifest): it is indexed by patient on disk here. A file named `*.gz` is gzipped NDJSON: it is
    decompressed here into a temporary folder (messages still name the .gz file, with the line numbers
    of its text). Close the Population (or use it as a context manager) to remove what opening made.
    Raises BadInputError when nothing in `path` can be input: missing, a folder with neither `*.json`
    nor `*.ndjson`, an empty NDJSON file or export, or a file that is not NDJSON text at all (an
    archive, an image, one pretty-printed JSON document). Bad records inside usable input are
    reported later, one by one.

    `want` gives what the logic reads (pushdown.Reads): NDJSON readers then skip the rest. It is called
    once, after these checks (a Bulk export's index is built at opening); without it, everything is read.
    """
    if path.is_dir():
        pop = _open_directory(path, want)
        pop.want = want
        return pop
    try:
        size = path.stat().st_size
    except OSError as e:
        raise BadInputError(f"{path}: cannot read the population: {e.strerror or e}; expected {EXPECTED}") from None
    if not path.is_file():
        raise BadInputError(f"{path}: not a directory of patient Bundles nor an NDJSON file; expected {EXPECTED}")
    if path.name.endswith(".gz"):
        pop = _open_gzipped(path)
        pop.want = want
        return pop
    _check_ndjson_start(path)
    return Population(path, "ndjson", size, "bytes", want=want)


def _open_gzipped(path: Path) -> Population:
    """A gzipped NDJSON file, decompressed (streaming) into a temporary folder the Population owns."""
    tmp = tempfile.TemporaryDirectory(prefix="guideline-population-")
    text = Path(tmp.name) / path.name.removesuffix(".gz")
    try:
        gunzip(path, text)
        _check_ndjson_start(text, shown=path)
        size = text.stat().st_size
    except BaseException:
        tmp.cleanup()
        raise
    return Population(path, "ndjson", size, "bytes", _unpacked=tmp, _text=text)


def _open_directory(path: Path, want: Callable[[], Reads] | None) -> Population:
    try:
        entries = [p for p in path.iterdir() if not p.name.startswith(".")]
        files = sorted((p for p in entries if p.suffix == ".json" and p.is_file()), key=lambda p: p.name)
        ndjson = [p for p in entries if is_data_file(p) and p.is_file()]
    except OSError as e:
        raise BadInputError(f"{path}: cannot list the population directory: {e.strerror or e}") from None
    if ndjson:
        return _open_bulk(path, files, ndjson, want)
    if not files:
        raise BadInputError(f"{path}: no *.json nor *.ndjson file in this folder; expected {EXPECTED}")
    return Population(path, "directory", len(files), "files", files)


def _open_bulk(path: Path, json_files: list[Path], ndjson: list[Path], want: Callable[[], Reads] | None) -> Population:
    """A folder with NDJSON files: a Bulk Data export, whose *.json files may only be its manifest."""
    manifests = [p for p in json_files if is_manifest(p)]
    others = [p.name for p in json_files if p not in manifests]
    if others:
        raise BadInputError(
            f"{path}: holds both NDJSON files (a Bulk Data export) and other *.json files ({others[0]}, ...); "
            "put patient Bundles and an export in separate folders"
        )
    index = BulkIndex(path, ndjson, manifests, want)
    if index.patients == 0:
        index.close()
        raise BadInputError(f"{path}: the export holds no patient; expected {EXPECTED}")
    return Population(path, "bulk", index.patients, "patients", bulk=index)


def _bulk_records(index: BulkIndex) -> Iterator[PatientRecord]:
    for i, group in enumerate(index.groups()):
        yield PatientRecord(i, group.where, group.patient, group.bundle_json, group.error, progress=i + 1)


def _check_ndjson_start(text: Path, shown: Path | None = None) -> None:
    """Fail fast on a file that holds no lines or is not NDJSON text (before the slow engine start).

    `shown` names the file in messages when `text` is its decompressed copy.
    """
    path = shown or text
    head = first_text(text, "the population")
    if not head:
        raise BadInputError(f"{path}: the file is empty (no NDJSON lines); expected {EXPECTED}")
    kind = binary_kind(head)
    if kind is not None:
        raise BadInputError(f"{path}: {kind}, not NDJSON; expected {EXPECTED}")
    first = head.lstrip().split(b"\n", 1)[0].strip()
    if not first.startswith((b"{", b"[")) and not _is_json(first):
        # Every NDJSON line is JSON; a first line that is not (plain text, CSV, XML) means another format.
        # A broken object or array on line 1 stays a bad record, reported with the rest.
        raise BadInputError(
            f"{path}: not NDJSON: line 1 is not JSON ({first[:40].decode('utf-8', 'replace')!r}); expected {EXPECTED}"
        )
    if first in (b"{", b"["):
        # An NDJSON line is a whole resource; a lone bracket is the start of one indented JSON document.
        raise BadInputError(
            f"{path}: an indented JSON document, not NDJSON (one resource per line); pass one patient's Bundle "
            "with --patient-bundle, or a folder of Bundles with --population"
        )


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return False
    return True


def compact(data: Any) -> str:
    """JSON on one line, as the engines' protocols take it (no line breaks; non-ASCII stays as is)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _directory_records(files: list[Path]) -> Iterator[PatientRecord]:
    for i, path in enumerate(files):
        try:
            bundle, pid = load_patient_bundle(path)
        except BadInputError as e:
            yield PatientRecord(i, str(path), error=_without_path(e.message, str(path)), progress=i + 1)
            continue
        yield PatientRecord(i, str(path), pid, compact(bundle), progress=i + 1)


def _without_path(message: str, path: str) -> str:
    """A bundle error without its leading file name (`where` carries it): 'line 3:7: ...' or the reason."""
    if not message.startswith(f"{path}:"):
        return message
    rest = message[len(path) + 1 :]
    m = re.match(r"(\d+):(\d+): (.*)", rest, re.DOTALL)
    return f"line {m[1]}:{m[2]}: {m[3]}" if m else rest.lstrip()


@dataclass
class _Group:
    key: str | None
    first: int
    last: int
    lines: list[str] = field(default_factory=list)
    patient_line: int | None = None
    error: str | None = None

    def fail(self, message: str) -> None:
        if self.error is None:  # the first problem is the one to fix first
            self.error = message

    def record(self, shown: str, index: int, consumed: int) -> PatientRecord:
        """The finished group as a record: its collection Bundle, or why it cannot be evaluated."""
        where = f"{shown}:{self.first}" if self.first == self.last else f"{shown}:{self.first}-{self.last}"
        rec = PatientRecord(index, where, self.key, progress=consumed)
        if self.error is None and self.patient_line is None:
            self.fail(f"no Patient resource for Patient/{self.key}; put the Patient line with its resources")
        if self.error is not None:
            rec.error = self.error
        else:
            rec.bundle_json = collection_bundle_json(self.lines)
        return rec


def ndjson_slice(
    path: Path,
    start: int,
    end: int,
    first_line: int,
    index: int,
    shown: Path | None = None,
    reads: Reads | None = None,
) -> list[PatientRecord]:
    """The records of lines `first_line`... of an NDJSON file, bytes [start, end): as `records()` reads them there.

    The JVM reads NDJSON populations itself and hands back the byte range of each record it would
    have to reject, so that the position and message come from this one reader. `shown` names the
    file in `where` when `path` is a decompressed copy (Population.text). `reads` must be what the JVM
    skipped, so that both readers see the same lines.
    """
    return list(_ndjson_records(path, shown or path, start, end, first_line, index, reads or Reads.all()))


# One pass over the file owns the open group's state (its lines, Patient, error); split, it travels everywhere.
# Long: a single pass with its group state, as above.
def _ndjson_records(  # noqa: PLR0913 - a slice of a file, and what to skip in it
    path: Path,
    shown: Path,
    start: int = 0,
    end: int | None = None,
    first_line: int = 1,
    first_index: int = 0,
    reads: Reads | None = None,
) -> Iterator[PatientRecord]:
    """Group consecutive lines of `path` by patient (see docs/population.md); `where` names `shown`.

    A line `reads` skips is not parsed: it only extends the open group's line range (it is not known
    whose it is; in a file grouped by patient it is that group's). A parsed line `reads` does not keep
    is grouped as usual but left out of the record's Bundle.
    """
    reads = reads or Reads.all()
    name = str(shown)
    counter = itertools.count(first_index)  # records in input order
    group: _Group | None = None
    consumed = start

    def finish(g: _Group) -> PatientRecord:
        return g.record(name, next(counter), consumed)

    try:
        f = path.open("rb")
    except OSError as e:
        raise BadInputError(f"{name}: cannot read the population: {e.strerror or e}") from None
    with f:
        f.seek(start)
        for lineno, raw in enumerate(f, first_line):
            if end is not None and consumed >= end:
                break
            consumed += len(raw)
            data = ndjson.body(raw, lineno)
            if not data.strip():
                continue  # blank lines separate nothing and carry nothing
            found = reads.screen(data)
            if found is True:
                if group is not None:
                    group.last = lineno
                continue
            if found is not None:
                # Dropped unparsed (pushdown.Reads.drops), its patient certain: grouped as a parsed one not kept.
                text, resource, problem = "", _UNPARSED, None
            else:
                line = ndjson.parse_line(raw, lineno, BUNDLE_HINT)
                text, resource, problem = line.text, line.resource, line.problem
            if problem is not None:
                # The line cannot be placed: it poisons the patient it sits in, never silently.
                if group is None:
                    group = _Group(None, lineno, lineno)
                group.last = lineno
                group.fail(problem)
                continue
            key: str | None = found
            if resource["resourceType"] == "Patient":
                pid = resource.get("id")
                key = pid if isinstance(pid, str) and pid else None
                if key is None:
                    if group is not None:
                        yield finish(group)
                    group = _Group(None, lineno, lineno)
                    group.fail(f"line {lineno}: the Patient has no id; give it one (resources refer to Patient/<id>)")
                    continue
            elif found is None:
                key = patient_key(resource)
            if group is None or (key is not None and key != group.key):
                if group is not None:
                    yield finish(group)
                group = _Group(key, lineno, lineno)
            elif group.key is None and key is not None:
                group.key = key
            group.last = lineno
            if resource["resourceType"] == "Patient":
                if group.patient_line is not None:
                    group.fail(f"line {lineno}: a second Patient/{key} (first at line {group.patient_line})")
                    continue
                group.patient_line = lineno
            if group.error is None and found is None and reads.keeps(resource):
                group.lines.append(text)
        if group is not None:
            yield finish(group)
