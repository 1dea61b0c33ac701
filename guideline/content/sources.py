"""Reads the hand-authored sources (fhir_resources/, cql/) and reports JSON problems with line:col."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guideline.core.config import Config
from guideline.core.errors import Finding

# A resource file larger than this is not a hand-authored knowledge artifact; refusing it early
# keeps a mistaken 50 MB drop-in from stalling every later layer.
MAX_SOURCE_BYTES = 5 * 1024 * 1024

# `library Name version 'x'` (the name may be quoted); the first such line of a CQL text.
_CQL_HEADER = re.compile(r"^\s*library\s+(\"[^\"]+\"|[A-Za-z_][A-Za-z0-9_]*)(?:\s+version\s+'([^']*)')?", re.MULTILINE)


def cql_header(text: str) -> tuple[str, str | None] | None:
    """(library name, version or None) from a CQL text's `library` header, or None when it has none."""
    m = _CQL_HEADER.search(text)
    return (m.group(1).strip('"'), m.group(2)) if m else None


@dataclass
class CqlSource:
    """One `cql/*.cql` file: the library name and version its header declares, and its text."""

    name: str
    version: str | None
    path: Path
    text: str


@dataclass
class Sources:
    """The hand-authored sources as read: resources (with their files), CQL by library name, problems."""

    resources: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    cql: dict[str, CqlSource] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)


def rel(cfg_root: Path, path: Path) -> str:
    """`path` relative to the project root, for messages (as given if it lies outside)."""
    try:
        return str(path.resolve().relative_to(cfg_root))
    except ValueError:
        return str(path)


def is_resource(data: object) -> bool:
    """A JSON object with a string resourceType (what every FHIR resource is, at least)."""
    return isinstance(data, dict) and isinstance(data.get("resourceType"), str)


def not_a_resource(shown: str) -> Finding:
    """The finding for a JSON file whose top level is not a FHIR resource."""
    message = "not a FHIR resource: expected a JSON object with a string 'resourceType'"
    return Finding("error", shown, "$", message, "json")


def read_json_file(path: Path, shown: str, max_bytes: int = MAX_SOURCE_BYTES) -> tuple[Any, list[Finding]]:
    """Parse a JSON file strictly; any problem becomes a located finding, never an exception."""
    try:
        size = path.stat().st_size
    except OSError as e:
        return None, [Finding("error", shown, "", f"cannot read file: {e.strerror}", "json")]
    if size > max_bytes:
        what = "one resource" if max_bytes == MAX_SOURCE_BYTES else "a knowledge package"
        msg = f"file is {size} bytes, over the {max_bytes}-byte limit for {what}; split it or remove it"
        return None, [Finding("error", shown, "", msg, "json")]
    try:
        raw = path.read_bytes()
    except OSError as e:
        return None, [Finding("error", shown, "", f"cannot read file: {e.strerror}", "json")]
    return parse_json_bytes(raw, shown)


def parse_json_bytes(raw: bytes, shown: str) -> tuple[Any, list[Finding]]:
    """Parse JSON bytes strictly (UTF-8, no BOM, not empty); problems are located findings."""

    def err(loc: str, msg: str) -> tuple[Any, list[Finding]]:
        return None, [Finding("error", shown, loc, msg, "json")]

    if not raw.strip():
        return err("", "file is empty; put one FHIR resource (a JSON object) in it or delete it")
    if raw.startswith(b"\xef\xbb\xbf"):
        return err("1:1", "file starts with a UTF-8 byte-order mark; save it as UTF-8 without BOM")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        return err(f"{line}:{col}", f"byte 0x{raw[e.start]:02x} is not valid UTF-8; FHIR JSON must be UTF-8")
    try:
        return json.loads(text, parse_constant=_reject_constant), []
    except json.JSONDecodeError as e:
        return err(f"{e.lineno}:{e.colno}", f"invalid JSON: {e.msg}")
    except _NonJsonConstant as e:
        return err(
            _locate(text, e.token), f"{e.token} is not JSON (Python's json reads it, FHIR servers do not); use a number"
        )
    except RecursionError:
        return err("", "JSON nested too deeply to be a FHIR resource")


class _NonJsonConstant(ValueError):
    """NaN, Infinity or -Infinity: Python's json accepts them, RFC 8259 (and so FHIR JSON) does not."""

    def __init__(self, token: str) -> None:
        super().__init__(token)
        self.token = token


def _reject_constant(token: str) -> Any:
    raise _NonJsonConstant(token)


def _locate(text: str, token: str) -> str:
    """line:col of the first bare `token` (outside strings, roughly: not inside quotes)."""
    m = re.search(rf'(?<![\w"]){re.escape(token)}(?![\w"])', text)
    if m is None:
        return ""
    line = text.count("\n", 0, m.start()) + 1
    return f"{line}:{m.start() - (text.rfind(chr(10), 0, m.start()) + 1) + 1}"


def load_sources(cfg: Config) -> Sources:
    """Read every resource under fhir_resources/ and every cql/*.cql; problems become findings, never exceptions."""
    out = Sources()
    _load_resources(cfg, out)
    _load_cql(cfg, out)
    return out


def _load_resources(cfg: Config, out: Sources) -> None:
    rdir = cfg.resources_dir
    for path in sorted(rdir.rglob("*.json")) if rdir.is_dir() else []:
        shown = rel(cfg.root, path)
        data, problems = read_json_file(path, shown)
        out.findings.extend(problems)
        if problems:
            continue
        if not is_resource(data):
            out.findings.append(not_a_resource(shown))
            continue
        folder = path.parent.name
        if folder != data["resourceType"].lower():
            out.findings.append(
                Finding(
                    "warning",
                    shown,
                    "resourceType",
                    f"a {data['resourceType']} lives in folder '{folder}'; move it to "
                    f"fhir_resources/{data['resourceType'].lower()}/",
                    "conventions",
                )
            )
        out.resources.append((path, data))


def _load_cql(cfg: Config, out: Sources) -> None:
    cdir = cfg.cql_dir
    for path in sorted(cdir.glob("*.cql")) if cdir.is_dir() else []:
        shown = rel(cfg.root, path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            out.findings.append(Finding("error", shown, "", f"cannot read CQL file: {e}", "cql"))
            continue
        header = cql_header(text)
        if header is None:
            out.findings.append(
                Finding(
                    "error",
                    shown,
                    "1:1",
                    "no `library Name version 'x'` header; every project library needs one",
                    "cql",
                )
            )
            continue
        name, version = header
        if name != path.stem:
            out.findings.append(
                Finding(
                    "error",
                    shown,
                    "1:1",
                    f"library '{name}' is in file {path.name}; "
                    f"rename the file to {name}.cql (one name joins CQL and Library)",
                    "cql",
                )
            )
        out.cql[name] = CqlSource(name, version, path, text)
