"""Reading a FHIR Bulk Data export folder: per-type NDJSON files grouped by patient through an on-disk index.

A `$export` writes one NDJSON file per resource type (`Patient.ndjson`, `Observation.ndjson`, ...),
ungrouped. One pass over every file records, for each line, where it is (file, byte offset, length)
and which patient it belongs to, in a SQLite database in a temporary folder; the index is then read
patient by patient and each patient's lines are read back from the files by offset. Memory holds one
patient and SQLite's small page cache whatever the size of the export; the disk holds the index
(~60 bytes per resource).

Servers send exports gzipped and clients often keep them so: a `*.ndjson.gz` file is decompressed once,
streaming, into the index's temporary folder, and that copy is indexed (reading by byte offset needs it);
messages still name the `.gz` file, with the line numbers of its decompressed text.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import sqlite3
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

from guideline.core.errors import BadInputError
from guideline.core.fhir import collection_bundle_json
from guideline.evaluation.bundles import binary_kind, first_text
from guideline.evaluation.ndjson import BOM, parse_line, protocol_text, reference_patient
from guideline.evaluation.pushdown import Reads

# Fields that tie a resource to its patient (Observation.subject, AllergyIntolerance.patient, ...).
PATIENT_LINKS = ("subject", "patient")

# What a Bulk Data export folder must hold, for messages.
EXPECTED_BULK = (
    "a Bulk Data export folder (one NDJSON file per resource type, e.g. Patient.ndjson, Observation.ndjson, "
    "or gzipped: Patient.ndjson.gz)"
)
# The names of an export's data files: NDJSON, plain or as the server sent it, gzipped.
DATA_SUFFIXES = (".ndjson", ".ndjson.gz")
BUNDLE_HINT = "an export's NDJSON holds one resource per line"

_SNIFF_BYTES = 64 * 1024
# Files are read (counted, decompressed) in blocks of this size: memory never holds a whole file.
_BLOCK = 1024 * 1024
# `line.patient` of a parsed resource no retrieve can return (see pushdown.py): it places its patient, unread.
_DROPPED = 2
# Rows are written to the index in chunks of this many lines (one transaction per chunk).
_CHUNK = 20_000
# A reference to a resource in the export, as it appears in a line's JSON text ("Medication/m1").
REFERENCE = re.compile(r'"reference"\s*:\s*"(?:[^"]*/)?([A-Za-z]+/[A-Za-z0-9\-.]{1,64})"')
# A patient reference inside a line too broken to parse, to know which patient it poisons.
PATIENT_REF = re.compile(r'"reference"\s*:\s*"(?:[^"]*/)?Patient/([A-Za-z0-9\-.]{1,64})"')


def patient_key(resource: dict[str, Any]) -> str | None:
    """The id of the patient a resource belongs to (`Patient/x`, or a URL ending in it), if it names one."""
    for name in PATIENT_LINKS:
        link = resource.get(name)
        ref = link.get("reference") if isinstance(link, dict) else None
        key = reference_patient(ref) if isinstance(ref, str) else None
        if key is not None:
            return key
    return None


def is_manifest(path: Path) -> bool:
    """Whether a JSON file is a Bulk Data export manifest (an object with `transactionTime` and `output`)."""
    try:
        with path.open("rb") as f:
            head = f.read(_SNIFF_BYTES)
        if b'"output"' not in head:
            return False
        data = json.loads(path.read_bytes().removeprefix(BOM))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and isinstance(data.get("output"), list) and "transactionTime" in data


def is_data_file(path: Path) -> bool:
    """Whether a file is an export data file by its name: `*.ndjson`, or `*.ndjson.gz` as servers send them."""
    return path.name.endswith(DATA_SUFFIXES)


@dataclass(frozen=True)
class DataFile:
    """One data file of an export: the file messages name, and where its NDJSON text is read."""

    path: Path  # the file in the export; a .gz file keeps its name in every message
    text: Path  # its NDJSON text: `path` itself, or the decompressed copy of a .gz file


def export_files(folder: Path, ndjson: list[Path], manifests: list[Path], unpack: Path | None = None) -> list[DataFile]:
    """The export's data files: those the manifest lists (in its order), or every *.ndjson[.gz] by name.

    A manifest url naming `X.ndjson` is found as `X.ndjson` in the folder, else as `X.ndjson.gz` (clients
    keep the files gzipped as the server sent them; and `X.ndjson.gz` is found as `X.ndjson` once unpacked).
    A manifest item's `count` (Bulk Data IG: the number of resources in the file) is checked against the
    file's non-blank lines, counted streaming; an item without one is not checked. A `.gz` file is always
    read whole, streaming, to prove it is a complete gzip file: with `unpack` (a folder) its text is
    written there in the same pass and becomes the DataFile's `text`; without, `text` is the .gz file
    (Spark decompresses it itself).

    Raises BadInputError for several manifests, a manifest naming a file that is not in the folder, a
    count that does not match, a .gz file that is not a complete gzip file, both X.ndjson and X.ndjson.gz
    without a manifest to choose, or a folder whose data files are binary or hold no line at all.
    """
    if len(manifests) > 1:
        names = ", ".join(p.name for p in manifests)
        raise BadInputError(f"{folder}: several export manifests ({names}); keep the one that belongs to the export")
    listed = _manifest_files(folder, manifests[0]) if manifests else [(p, None, "") for p in _by_name(folder, ndjson)]
    if not listed:
        raise BadInputError(f"{folder}: the export manifest lists no output file; expected {EXPECTED_BULK}")
    files: list[DataFile] = []
    any_line = False
    for path, count, item in listed:
        text, has_line, lines = _check_data_file(path, unpack, counting=count is not None)
        if count is not None and lines != count:
            raise BadInputError(
                f"{manifests[0]}: {item} says {path.name} holds {count} resources, but {path} has {lines} "
                "non-blank lines: the download is incomplete or the file changed; download the file again"
            )
        files.append(DataFile(path, text))
        any_line = has_line or any_line
    if not any_line:
        raise BadInputError(f"{folder}: every NDJSON file of the export is empty; expected {EXPECTED_BULK}")
    return files


def _by_name(folder: Path, ndjson: list[Path]) -> list[Path]:
    """Every data file in name order (X.ndjson.gz where X.ndjson would be); X.ndjson beside X.ndjson.gz is refused."""
    plain = {p.name for p in ndjson if not p.name.endswith(".gz")}
    both = sorted(p.name for p in ndjson if p.name.endswith(".gz") and p.name.removesuffix(".gz") in plain)
    if both:
        raise BadInputError(
            f"{folder}: holds both {both[0].removesuffix('.gz')} and {both[0]} (the same file twice?); "
            "keep one of them, or add the export manifest naming the files to read"
        )
    return sorted(ndjson, key=lambda p: p.name.removesuffix(".gz"))


def _manifest_files(folder: Path, manifest: Path) -> list[tuple[Path, int | None, str]]:
    """(file, its manifest `count` or None, "output[i]") for each file the manifest lists, in its order."""
    data = json.loads(manifest.read_bytes().removeprefix(BOM))
    files: list[tuple[Path, int | None, str]] = []
    for i, item in enumerate(data["output"]):
        url = item.get("url") if isinstance(item, dict) else None
        if not isinstance(url, str) or not url:
            raise BadInputError(f"{manifest}: output[{i}] has no url; a manifest lists each file as {{type, url}}")
        count = item.get("count")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
            raise BadInputError(
                f"{manifest}: output[{i}].count is {json.dumps(count)}, not a number of resources; "
                "fix the manifest or remove the count"
            )
        # The url is where the server offered the file; the download keeps its last path segment.
        name = Path(urlparse(url).path).name
        path = _downloaded(folder, name)
        if path is None:
            also = f" (nor {_other_form(name)})" if _other_form(name) else ""
            raise BadInputError(
                f"{manifest}: output[{i}] names {name}, which is not in {folder}{also}; "
                "download every file of the export"
            )
        if path not in [f[0] for f in files]:
            files.append((path, count, f"output[{i}]"))
    return files


def _other_form(name: str) -> str | None:
    """The other name a downloaded data file may have: gzipped (X.ndjson.gz) or unpacked (X.ndjson)."""
    if name.endswith(".ndjson"):
        return name + ".gz"
    return name.removesuffix(".gz") if name.endswith(".ndjson.gz") else None


def _downloaded(folder: Path, name: str) -> Path | None:
    """The file of the folder a manifest url names: by its name, else by its other form (see _other_form)."""
    for candidate in (name, _other_form(name)):
        if candidate and (folder / candidate).is_file():
            return folder / candidate
    return None


def _check_data_file(path: Path, unpack: Path | None, counting: bool) -> tuple[Path, bool, int | None]:
    """Refuse a data file that is not NDJSON text: (where its text is, whether it has a line, its lines if counted).

    A plain file not counted is only sniffed (its first bytes); a .gz file, or one whose lines are counted,
    is read whole, streaming (and a .gz one decompressed into `unpack` when given).
    """
    gzipped = path.name.endswith(".gz")
    if not gzipped and not counting:
        head = first_text(path, "the export file")
        _refuse_binary(path, head)
        return path, bool(head), None
    if not gzipped or unpack is None:
        lines = read_through(path, None, lambda head: _refuse_binary(path, head))
        return path, lines > 0, lines
    unpack.mkdir(parents=True, exist_ok=True)
    text = unpack / path.name.removesuffix(".gz")
    with _writing(text, path) as dest:
        lines = read_through(path, dest, lambda head: _refuse_binary(path, head))
    return text, lines > 0, lines


def _refuse_binary(path: Path, head: bytes) -> None:
    kind = binary_kind(head) if head else None
    if kind is not None:
        raise BadInputError(f"{path}: {kind}, not NDJSON; expected {EXPECTED_BULK}")


def gunzip(path: Path, dest: Path) -> None:
    """Decompress a gzipped file into `dest`, streaming; BadInputError naming `path` unless it is complete gzip."""
    with _writing(dest, path) as out:
        read_through(path, out, None)


@contextmanager
def _writing(dest: Path, source: Path) -> Iterator[IO[bytes]]:
    """`dest` open for writing; a failure to write (a full disk) is a BadInputError naming both files."""
    try:
        with dest.open("wb") as out:
            yield out
    except OSError as e:
        raise BadInputError(
            f"{source}: cannot write its decompressed copy {dest}: {e.strerror or e}; free space there"
        ) from None


def read_through(path: Path, dest: IO[bytes] | None, sniff: Callable[[bytes], None] | None) -> int:
    """Read a data file block by block (a `*.gz` one decompressed), copying its text to `dest`: its non-blank lines.

    `sniff` sees the first bytes that are not whitespace (after a UTF-8 BOM), once, before the rest is
    read: it may raise to refuse the file. Memory holds one block whatever the size of the file. A .gz
    file that is empty, truncated or corrupt (CRC, bad data) is a BadInputError naming it.
    """
    gzipped = path.name.endswith(".gz")
    lines = 0
    content = False  # the current line holds more than whitespace
    head = b""
    try:
        if gzipped and path.stat().st_size == 0:
            raise EOFError("the file is empty")
        with gzip.open(path, "rb") if gzipped else path.open("rb") as src:
            first = True
            # The first read is long enough to hold a whole BOM (buffered reads return all they are asked for).
            while block := src.read(max(_BLOCK, len(BOM)) if first else _BLOCK):
                if first:
                    block, first = block.removeprefix(BOM), False
                if sniff is not None and not head and block.strip():
                    head = block[:_SNIFF_BYTES]
                    sniff(head)
                if dest is not None:
                    try:
                        dest.write(block)
                    except OSError as e:
                        raise BadInputError(f"{path}: cannot write its decompressed copy: {e.strerror or e}") from None
                pieces = block.split(b"\n")
                for piece in pieces[:-1]:
                    lines += 1 if content or piece.strip() else 0
                    content = False
                content = content or bool(pieces[-1].strip())
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise BadInputError(f"{path}: not a complete gzip file ({e}); download it again") from None
    except OSError as e:
        raise BadInputError(f"{path}: cannot read the export file: {e.strerror or e}") from None
    return lines + (1 if content else 0)


# A line's compact opening as servers write it, its type: see _skipped_lines.
_COMPACT_TYPE = re.compile(rb'\{"resourceType":"([A-Za-z]+)"')


def _whole_lines(f: IO[bytes]) -> Iterator[tuple[bytes, int]]:
    """A file's text in blocks of about _BLOCK bytes: (block, end), its whole lines `block[:end]`.

    The rest of a block (a line cut short) is read again with the next one (the file is sought back): nothing
    is copied to join the pieces. A line longer than a block makes the block longer; the last line of the file
    needs no line break.
    """
    while block := f.read(_BLOCK):
        end = block.rfind(b"\n") + 1
        while end == 0 and (more := f.read(_BLOCK)):
            block += more
            end = block.rfind(b"\n") + 1
        if end == 0:
            end = len(block)  # the file's last line, without a line break
        elif end < len(block):
            f.seek(end - len(block), io.SEEK_CUR)
        yield block, end


def _skipped_lines(block: bytes, end: int, reads: Reads) -> int:
    """How many lines `block[:end]` holds if each starts with `{"resourceType":"X"` for one type X `reads`
    skips; else -1.

    Each such line is one `Reads.skips` skips (its compact opening, as servers write it, is well within the
    bytes looked at), so the block is only counted: a blank line, a byte order mark or another type reads the
    block line by line.
    """
    m = _COMPACT_TYPE.match(block)
    if m is None or not reads.skips(m[0]):
        return -1
    prefix = m[0]
    lines = 0
    at = 0
    while at < end:
        if not block.startswith(prefix, at):
            return -1
        lines += 1
        at = block.find(b"\n", at + len(prefix), end) + 1
        if at == 0:
            break  # the file's last line, without a line break
    return lines


class _Lines:
    """The non-blank lines of one data file, read in blocks of whole lines: (line number, offset of the line's text
    after any byte order mark, raw line, its text). A block whose every line is of a type `reads` skips (see
    `_skipped_lines`) is only counted. `count`: the non-blank lines met so far, those counted in blocks included.
    """

    def __init__(self, f: IO[bytes], reads: Reads) -> None:
        self._f = f
        self._reads = reads
        self.count = 0

    def __iter__(self) -> Iterator[tuple[int, int, bytes, bytes]]:
        off = 0
        lineno = 0
        for block, end in _whole_lines(self._f):
            n = _skipped_lines(block, end, self._reads)
            if n >= 0:
                self.count += n
                lineno += n
                off += end
                continue
            for raw in io.BytesIO(block[:end]):
                lineno += 1
                start, off = off, off + len(raw)
                body = raw.removeprefix(BOM) if lineno == 1 else raw
                if not body.strip():
                    continue
                self.count += 1
                yield lineno, start + len(raw) - len(body), raw, body


@dataclass
class Group:
    """One patient of the export (or a line that could not be placed), ready to become a record."""

    where: str  # file:line of the Patient (or of the bad line)
    patient: str | None
    bundle_json: str | None = None
    error: str | None = None


class BulkIndex:
    """The on-disk index of an export: patients in the order of their Patient lines, each with its lines."""

    def __init__(
        self, folder: Path, ndjson: list[Path], manifests: list[Path], want: Callable[[], Reads] | None = None
    ) -> None:
        """Check the export (see export_files; `.gz` files are unpacked into the index's folder) and index it.

        `want` gives what the logic reads (asked once the files are checked): lines it skips are not
        indexed, never parsed (see pushdown.py). Without it every line is indexed.
        """
        start = time.monotonic()
        self._tmp = tempfile.TemporaryDirectory(prefix="guideline-bulk-")
        self.db = sqlite3.connect(Path(self._tmp.name) / "index.sqlite", isolation_level=None)
        try:
            data = export_files(folder, ndjson, manifests, unpack=Path(self._tmp.name) / "unpacked")
            self.files = [d.path for d in data]  # named in messages
            self._texts = [d.text for d in data]  # read
            self.reads = want() if want is not None else Reads.all()
            self._index(data)
        except BaseException:
            self.close()
            raise
        self.seconds = time.monotonic() - start  # checking, unpacking and indexing

    def _index(self, data: list[DataFile]) -> None:
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
        self.kept = 0  # resources indexed: the others were skipped (see pushdown.py)
        self.resources = sum(self._scan(i, d.path, d.text) for i, d in enumerate(data))
        self.db.execute("CREATE INDEX line_by_patient ON line(pkey, file, off)")
        self.db.execute("CREATE INDEX poison_by_patient ON poison(pkey)")
        self.patients = self._count("SELECT count(DISTINCT pkey) FROM line") + self._count("SELECT count(*) FROM bad")
        self.has_shared = self._count("SELECT count(*) FROM shared") > 0

    def _count(self, sql: str) -> int:
        return int(self.db.execute(sql).fetchone()[0])

    def close(self) -> None:
        """Drop the index (its folder, with the unpacked copies of .gz files, is removed)."""
        self.db.close()
        self._tmp.cleanup()

    def _scan(self, file: int, path: Path, text: Path) -> int:
        """Index one data file (its text at `text`): each line under its patient, shared ones by reference, bad apart.

        Messages name `path`, the file in the export (a .gz one, whose text is its decompressed copy). Lines are
        read by `_Lines` (blocks of a type no retrieve reads are only counted); each other line is skipped or
        dropped on its raw text when `Reads.screen` can tell (never parsed), else parsed and placed.
        """
        rows: list[tuple[str, int, int, int, int, int]] = []
        shared: list[tuple[str, int, int, int]] = []
        reads = self.reads
        dropped: dict[str, tuple[str, int, int, int, int, int]] = {}
        try:
            f = text.open("rb")
        except OSError as e:
            raise BadInputError(f"{path}: cannot read the export file: {e.strerror or e}") from None
        with f:
            lines = _Lines(f, reads)
            for lineno, start, raw, body in lines:
                screened = reads.screen(body)
                if screened is True:
                    continue
                key: str | None = screened
                if key is None:
                    line = parse_line(raw, lineno, BUNDLE_HINT)
                    resource = line.resource
                    if line.problem is not None:
                        m = PATIENT_REF.search(body.decode("utf-8", "replace"))
                        if m is not None:
                            self.db.execute("INSERT INTO poison VALUES (?, ?)", (m[1], f"{path.name} {line.problem}"))
                        else:
                            self.db.execute("INSERT INTO bad VALUES (?, ?, ?)", (file, lineno, line.problem))
                        continue
                    if reads.keeps(resource):
                        self._place(resource, (file, start, len(body), lineno), rows, shared)
                        continue
                    key = patient_key(resource)
                # Dropped: never read back, but it places its patient as without the push-down (a patient with no
                # Patient line is still reported, at the same line): its first such line in this file is enough.
                if key is not None and key not in dropped:
                    dropped[key] = (key, file, start, len(body), lineno, _DROPPED)
                    if len(dropped) >= _CHUNK:  # memory stays flat; a repeated row later changes nothing
                        rows.extend(dropped.values())
                        dropped.clear()
            rows.extend(dropped.values())
            self._flush(rows, shared)
        return lines.count

    def _place(
        self,
        resource: dict[str, Any],
        where: tuple[int, int, int, int],
        rows: list[tuple[str, int, int, int, int, int]],
        shared: list[tuple[str, int, int, int]],
    ) -> None:
        """Index a kept resource at `where` (file, offset, length, line): under its patient, or shared by reference."""
        file, start, length, lineno = where
        rtype = resource["resourceType"]
        if rtype == "Patient":
            rid = resource.get("id")
            if not (isinstance(rid, str) and rid):
                problem = f"line {lineno}: the Patient has no id; give it one"
                self.db.execute("INSERT INTO bad VALUES (?, ?, ?)", (file, lineno, problem))
                return
            rows.append((rid, file, start, length, lineno, 1))
        else:
            key = patient_key(resource)
            if key is not None:
                rows.append((key, file, start, length, lineno, 0))
            elif isinstance(resource.get("id"), str):
                shared.append((f"{rtype}/{resource['id']}", file, start, length))
        self.kept += 1
        if len(rows) >= _CHUNK or len(shared) >= _CHUNK:
            self._flush(rows, shared)

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
        fds = [os.open(p, os.O_RDONLY) for p in self._texts]
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
            "SELECT file, off, len, lineno, patient FROM line WHERE pkey = ? ORDER BY patient = 1 DESC, file, off",
            (key,),
        ).fetchall()
        file, _, _, lineno, _ = rows[0]
        group = Group(f"{self.files[file]}:{lineno}", key)
        if not has_patient:
            group.error = f"no Patient resource for Patient/{key} in the export; export the Patient type too"
            return group
        if sum(r[4] == 1 for r in rows) > 1:
            second = rows[1]
            group.error = f"a second Patient/{key} at {self.files[second[0]].name}:{second[3]}"
            return group
        poisoned = self.db.execute("SELECT message FROM poison WHERE pkey = ? LIMIT 1", (key,)).fetchone()
        if poisoned is not None:
            group.error = poisoned[0]
            return group
        texts = [protocol_text(os.pread(fds[f], n, off).decode("utf-8")) for f, off, n, _, p in rows if p != _DROPPED]
        if self.has_shared:  # scanning every resource for references costs ~30 % of reading
            texts += self._shared(fds, texts)
        group.bundle_json = collection_bundle_json(texts)
        return group

    def _shared(self, fds: list[int], texts: list[str]) -> list[str]:
        """The export's patient-less resources (Medication, ...) that the patient's resources refer to, transitively."""
        seen: set[str] = set()
        out: list[str] = []
        todo = [ref for t in texts for ref in REFERENCE.findall(t) if not ref.startswith("Patient/")]
        while todo:
            ref = todo.pop(0)
            if ref in seen:
                continue
            seen.add(ref)
            row = self.db.execute("SELECT file, off, len FROM shared WHERE ref = ?", (ref,)).fetchone()
            if row is not None:
                text = protocol_text(os.pread(fds[row[0]], row[2], row[1]).decode("utf-8"))
                out.append(text)
                todo += [r for r in REFERENCE.findall(text) if not r.startswith("Patient/")]
        return out
