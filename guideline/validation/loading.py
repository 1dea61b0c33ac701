"""Reading what validate checks: project sources, dist/, a bundle, a package or a folder (layer 1)."""

from __future__ import annotations

import base64
import binascii
import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guideline.content.cql import Engine, shared_engine
from guideline.content.package import build_package, stamp
from guideline.content.sources import (
    cql_header,
    is_resource,
    load_sources,
    not_a_resource,
    parse_json_bytes,
    read_json_file,
    rel,
)
from guideline.core import toolchain
from guideline.core.config import Config, find_root, load_config
from guideline.core.errors import Finding, GuidelineError, UsageError
from guideline.core.fhir import FHIRHELPERS_URL
from guideline.validation.carried import check_carried
from guideline.validation.schema import schema_findings
from guideline.validation.subject import CqlLib, Item, Subject

# A bundle or package holds every resource plus base64 CQL and ELM (FHIRHelpers alone is ~1 MB);
# anything far beyond this is not a knowledge package, and reading it would only stall the run.
MAX_BUNDLE_BYTES = 32 * 1024 * 1024

# Package archives: bound what we decompress (a tar bomb must not exhaust memory).
MAX_PACKAGE_MEMBERS = 5000

MAX_PACKAGE_UNPACKED = 128 * 1024 * 1024


@dataclass
class Loaded:
    """A validation subject and the findings met while loading it (JSON syntax, compile)."""

    target: str
    subject: Subject
    findings: list[Finding]
    structural_only: bool = False


def _decode_content(item: Item) -> tuple[str | None, dict[str, Any] | None, list[Finding]]:
    """(CQL text, ELM) from a Library's base64 content; problems as findings."""
    text: str | None = None
    elm: dict[str, Any] | None = None
    problems: list[Finding] = []
    content = item.resource.get("content")
    for i, c in enumerate(content if isinstance(content, list) else []):
        if not isinstance(c, dict) or c.get("contentType") not in ("text/cql", "application/elm+json"):
            continue
        data = c.get("data")
        try:
            # R4 base64Binary may contain whitespace; anything else outside the alphabet is an error.
            packed = "".join(data.split()) if isinstance(data, str) else ""
            raw = base64.b64decode(packed, validate=True).decode("utf-8")
            if c["contentType"] == "text/cql":
                text = raw
            else:
                parsed = json.loads(raw)
                elm = parsed if isinstance(parsed, dict) and isinstance(parsed.get("library"), dict) else None
                if elm is None:
                    raise ValueError("not an ELM library")
        except (binascii.Error, UnicodeDecodeError, ValueError, RecursionError) as e:
            problems.append(
                Finding(
                    "error",
                    item.file,
                    item.at("content", i, "data"),
                    f"{c['contentType']} content cannot be decoded ({type(e).__name__}); "
                    "rebuild the Library with `guideline build`",
                    "cql",
                )
            )
    return text, elm, problems


def _elm_identity(elm: dict[str, Any] | None, text: str | None) -> tuple[str | None, str | None]:
    """(name, version) of a carried library: its CQL header (the text is what servers translate), else its ELM."""
    if text:
        header = cql_header(text)
        if header is not None:
            return header
    ident = ((elm or {}).get("library") or {}).get("identifier")
    if isinstance(ident, dict) and isinstance(ident.get("id"), str):
        v = ident.get("version")
        return ident["id"], v if isinstance(v, str) else None
    return None, None


def _elm_messages(lib: CqlLib) -> list[Finding]:
    """Translator errors/warnings recorded in an ELM (CqlToElmError annotations)."""
    out = []
    anns = ((lib.elm or {}).get("library") or {}).get("annotation")
    for a in anns if isinstance(anns, list) else []:
        if not isinstance(a, dict) or a.get("type") != "CqlToElmError":
            continue
        sev = str(a.get("errorSeverity", "error")).lower()
        if sev not in ("error", "warning"):
            continue
        line, col = a.get("startLine"), a.get("startChar")
        loc = f"{lib.pos_prefix}{line}:{col}" if isinstance(line, int) and isinstance(col, int) else lib.header_loc()
        out.append(
            Finding(
                sev,
                lib.file,
                loc,
                f"{a.get('message')} (library {lib.name}; translator, from the ELM)",
                "cql",
            )
        )
    return out


def _libraries(
    items: list[Item],
    cql_file_for: Callable[[str, Item], tuple[str, str]],
    engine_for: Callable[[], Engine] | None,
    elm_messages: bool = True,
) -> tuple[dict[str, CqlLib], list[Finding]]:
    """CQL libraries carried by Library resources (content); with an engine, each text/cql is compiled and checked."""
    libs: dict[str, CqlLib] = {}
    findings: list[Finding] = []
    for it in items:
        if it.rtype != "Library":
            continue
        if it.str_field("url") == FHIRHELPERS_URL:
            # The package's own FHIRHelpers text, when it carries one, is what its libraries include.
            helpers_text = _decode_content(it)[0] if engine_for is not None else None
            libs["FHIRHelpers"] = CqlLib("FHIRHelpers", it.str_field("version"), None, helpers_text, it.file, "", it)
            continue
        lib = _carried_library(it, cql_file_for, libs, findings)
        if lib is None:
            continue
        libs[lib.name] = lib
        if elm_messages and lib.elm is not None and (lib.text is None or engine_for is None):
            findings.extend(_elm_messages(lib))
    if engine_for is not None and any(lib.text is not None for n, lib in libs.items() if n != "FHIRHelpers"):
        findings.extend(check_carried(libs, engine_for()))
    return libs, findings


def _carried_library(
    it: Item,
    cql_file_for: Callable[[str, Item], tuple[str, str]],
    libs: dict[str, CqlLib],
    findings: list[Finding],
) -> CqlLib | None:
    """The CQL library a Library resource carries (None when it carries none, or a second copy)."""
    text, elm, problems = _decode_content(it)
    findings.extend(problems)
    if text is None and elm is None:
        return None
    name, version = _elm_identity(elm, text)
    if name is None:
        findings.append(
            Finding(
                "error",
                it.file,
                it.at("content"),
                "the CQL content has no `library Name version 'x'` header",
                "cql",
            )
        )
        return None
    if name in libs:
        first = libs[name].item
        findings.append(
            Finding(
                "error",
                it.file,
                it.at("name"),
                f"CQL library {name} is carried by two Libraries ({first.key if first else '?'} "
                f"and {it.key}); keep one",
                "cql",
            )
        )
        return None
    file, prefix = cql_file_for(name, it)
    return CqlLib(name, version, elm, text, file, prefix, it)


def _load_sources(cfg: Config, engine: Engine | None) -> Loaded:
    try:
        pkg = build_package(cfg, engine, strict=False)
    except GuidelineError:
        raise
    except Exception as e:  # noqa: BLE001 - build assumes well-formed resources; never a traceback
        return _load_unbuildable(cfg, e)
    findings = list(pkg.findings)
    items: list[Item] = []
    for r in pkg.resources:
        key = f"{r.get('resourceType')}/{r.get('id')}"
        src = pkg.source_of.get(key)
        external = r.get("url") == FHIRHELPERS_URL
        items.append(Item(r, rel(cfg.root, src) if src else "(generated)", str(r.get("resourceType")), external))
    # CQL files that did not compile (their errors are reported, possibly in an included library):
    # their Libraries carry no content, which is a consequence, not a missing file.
    present = {p.stem for p in cfg.cql_dir.glob("*.cql")} if cfg.cql_dir.is_dir() else set()
    failed = present - set(pkg.elm)

    def cql_file(name: str, _it: Item) -> tuple[str, str]:
        return rel(cfg.root, cfg.cql_dir / f"{name}.cql"), ""

    # build already reported the translator's messages
    libs, more = _libraries(items, cql_file, None, elm_messages=False)
    findings.extend(more)
    for name in pkg.elm:
        if name != "FHIRHelpers" and name not in libs:
            # compiled, but no Library resource carries it (build attaches CQL by Library id)
            libs[name] = CqlLib(
                name,
                _elm_identity(pkg.elm[name], None)[1],
                pkg.elm[name],
                None,
                rel(cfg.root, cfg.cql_dir / f"{name}.cql"),
                "",
                None,
            )
    subject = Subject(items, libs, cfg.package.canonical, failed_cql=failed)
    return Loaded("sources", subject, findings)


def _load_unbuildable(cfg: Config, error: Exception) -> Loaded:
    """Build could not assemble the package: check the raw sources' structure, which says why."""
    src = load_sources(cfg)
    findings = list(src.findings)
    findings.append(
        Finding(
            "error",
            "fhir_resources/",
            "",
            f"build could not assemble the package ({type(error).__name__}: {error}); fix the "
            "structural errors reported for the resource files, then validate again",
            "build",
        )
    )
    items = [
        Item(_stamped(data, cfg), rel(cfg.root, path), str(data.get("resourceType"))) for path, data in src.resources
    ]
    # Only the structural layers apply to unbuilt sources (no canonicals, CQL or stamps yet).
    return Loaded("sources", Subject(items, {}, cfg.package.canonical), findings, structural_only=True)


def _stamped(resource: dict[str, Any], cfg: Config) -> dict[str, Any]:
    """The release metadata build would stamp (status, version...), so its absence is not reported."""
    try:
        return stamp(resource, cfg)
    except Exception:  # noqa: BLE001 - best effort on a resource build already choked on
        return resource


def _own_project(path: Path, cfg: Config | None) -> Config | None:
    """The project config when `path` is inside a guideline project (to map dist back to sources)."""
    if cfg is not None:
        return cfg
    try:
        return load_config(find_root(path.parent if path.is_file() else path))
    except GuidelineError:
        return None


def _source_map(cfg: Config) -> dict[str, str]:
    src = load_sources(cfg)
    out: dict[str, str] = {}
    for path, data in src.resources:
        out.setdefault(f"{data.get('resourceType')}/{data.get('id')}", rel(cfg.root, path))
    return out


def _load_resources(
    resources: list[tuple[dict[str, Any], str, str]],
    target: str,
    cfg: Config | None,
    engine: Engine | None,
    findings: list[Finding],
) -> Loaded:
    """Items from (resource, shown file, location prefix); map them to sources when they are ours."""
    base = cfg.package.canonical if cfg else None
    ours = bool(base) and any(
        isinstance(r.get("url"), str) and r["url"].startswith(f"{base}/") for r, _, _ in resources
    )
    smap = _source_map(cfg) if cfg and ours else {}
    items: list[Item] = []
    for r, shown, prefix in resources:
        key = f"{r.get('resourceType')}/{r.get('id')}"
        external = r.get("url") == FHIRHELPERS_URL
        if key in smap:
            items.append(Item(r, smap[key], str(r.get("resourceType")), external))
        elif external and ours:
            items.append(
                Item(
                    r,
                    rel(cfg.root, toolchain.toolchain_dir() / "FHIRHelpers-4.0.1.cql") if cfg else shown,
                    str(r.get("resourceType")),
                    external,
                )
            )
        else:
            items.append(Item(r, shown, prefix, external))

    def cql_file(name: str, it: Item) -> tuple[str, str]:
        # Our own dist/: positions point into cql/ while the carried text is the source's text;
        # a changed text is located in the Library that carries it.
        if cfg and ours and _same_text(cfg.cql_dir / f"{name}.cql", _decode_content(it)[0]):
            return rel(cfg.root, cfg.cql_dir / f"{name}.cql"), ""
        return it.file, f"Library/{it.rid} CQL "

    shared: list[Engine] = []

    def engine_for() -> Engine:
        if engine is not None:
            return engine
        if not shared:
            shared.append(shared_engine())
        return shared[0]

    libs, more = _libraries(items, cql_file, engine_for)
    findings.extend(more)
    if cfg and ours:
        findings.extend(_drift(cfg, libs))
    if base is None or not ours:
        base = _guess_base(items)
    subject = Subject(
        items,
        libs,
        base,
        cql_hint="a Library with text/cql content for {name}" if not ours else "cql/{name}.cql",
    )
    return Loaded(target, subject, findings)


def _same_text(path: Path, text: str | None) -> bool:
    """Whether the file at `path` holds exactly `text`."""
    try:
        return text is not None and path.is_file() and path.read_text(encoding="utf-8") == text
    except (OSError, UnicodeDecodeError):
        return False


def _drift(cfg: Config, libs: dict[str, CqlLib]) -> list[Finding]:
    """The project's dist/ carries CQL that differs from cql/: it is stale."""
    out = []
    for name, lib in libs.items():
        path = cfg.cql_dir / f"{name}.cql"
        if lib.text is None or not path.is_file():
            continue
        try:
            current = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if current != lib.text:
            out.append(
                Finding(
                    "warning",
                    rel(cfg.root, path),
                    "1:1",
                    f"the validated package carries an older text of {name}.cql; run `guideline build` "
                    "to regenerate dist/",
                    "cql",
                )
            )
    return out


def _guess_base(items: list[Item]) -> str | None:
    """The namespace most artifacts share ({base}/{Type}/{id}), for a package that is not ours."""
    counts: dict[str, int] = {}
    for it in items:
        url = it.str_field("url")
        if url and not it.external and url.endswith(f"/{it.rtype}/{it.rid}"):
            b = url[: -len(f"/{it.rtype}/{it.rid}")]
            counts[b] = counts.get(b, 0) + 1
    return max(counts, key=lambda k: counts[k]) if counts else None


def _bundle_resources(data: Any, shown: str, findings: list[Finding]) -> list[tuple[dict[str, Any], str, str]]:
    out: list[tuple[dict[str, Any], str, str]] = []
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        return out
    envelope = {k: v for k, v in data.items() if k != "entry"}
    entries = data.get("entry")
    if entries is not None and not isinstance(entries, list):
        findings.append(Finding("error", shown, "Bundle.entry", "Bundle.entry must be a JSON array", "schema"))
        entries = []
    stripped: list[Any] = []  # the entries without their resources, index for index
    for i, e in enumerate(entries or []):
        stripped.append({k: v for k, v in e.items() if k != "resource"} if isinstance(e, dict) else e)
        if not isinstance(e, dict):
            findings.append(
                Finding("error", shown, f"Bundle.entry[{i}]", "a bundle entry must be a JSON object", "schema")
            )
            continue
        res = e.get("resource")
        if not isinstance(res, dict):
            findings.append(
                Finding(
                    "error",
                    shown,
                    f"Bundle.entry[{i}].resource",
                    "entry has no resource object; every entry of a knowledge bundle carries one",
                    "schema",
                )
            )
            continue
        out.append((res, shown, f"Bundle.entry[{i}].resource"))
    envelope["entry"] = stripped
    # The envelope (type, request, fullUrl) is checked by the schema with placeholder resources.
    findings.extend(f for f in schema_findings(envelope, shown, "Bundle") if ".resource" not in f.location)
    return out


def _read_package(path: Path, shown: str, findings: list[Finding]) -> list[tuple[dict[str, Any], str, str]]:
    """Resources from a FHIR NPM package (.tgz), read in memory with size limits."""
    out: list[tuple[dict[str, Any], str, str]] = []
    try:
        size = path.stat().st_size
        if size > MAX_BUNDLE_BYTES:
            findings.append(
                Finding(
                    "error",
                    shown,
                    "",
                    f"package is {size} bytes, over the {MAX_BUNDLE_BYTES}-byte limit; this is not a knowledge package",
                    "json",
                )
            )
            return out
        with tarfile.open(path, mode="r:gz") as tar:
            names = _read_members(tar, shown, findings, out)
        if "package.json" not in names:
            findings.append(
                Finding(
                    "error",
                    shown,
                    "package/package.json",
                    "not a FHIR NPM package: package/package.json is missing",
                    "json",
                )
            )
    except (tarfile.TarError, OSError, EOFError, ValueError) as e:
        findings.append(
            Finding(
                "error",
                shown,
                "",
                f"cannot read the package archive ({type(e).__name__}: {e}); "
                "expected a gzipped tar from `guideline build`",
                "json",
            )
        )
    return out


def _read_members(
    tar: tarfile.TarFile, shown: str, findings: list[Finding], out: list[tuple[dict[str, Any], str, str]]
) -> set[str]:
    """Append the resources of the archive's .json members to `out`; the members' base names.

    Stops at MAX_PACKAGE_MEMBERS members or MAX_PACKAGE_UNPACKED bytes (a tar bomb must not
    exhaust memory). package.json is checked as the manifest; .index.json is skipped.
    """
    total = 0
    names: set[str] = set()
    for n, member in enumerate(tar):
        if n >= MAX_PACKAGE_MEMBERS:
            findings.append(Finding("error", shown, "", "package has too many files", "json"))
            break
        if not member.isfile() or not member.name.endswith(".json"):
            continue
        total += member.size
        if total > MAX_PACKAGE_UNPACKED:
            findings.append(
                Finding(
                    "error",
                    shown,
                    "",
                    f"package unpacks to more than {MAX_PACKAGE_UNPACKED} bytes; refusing to read further",
                    "json",
                )
            )
            break
        fobj = tar.extractfile(member)
        raw = fobj.read() if fobj else b""
        mshown = f"{shown}!{member.name}"
        data, problems = parse_json_bytes(raw, mshown)
        findings.extend(problems)
        base = member.name.rsplit("/", 1)[-1]
        names.add(base)
        if problems or base in ("package.json", ".index.json"):
            if base == "package.json" and not problems:
                findings.extend(_package_manifest(data, mshown))
            continue
        if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
            findings.append(
                Finding(
                    "error",
                    mshown,
                    "$",
                    "not a FHIR resource: expected a JSON object with a string 'resourceType'",
                    "json",
                )
            )
            continue
        out.append((data, mshown, data["resourceType"]))
    return names


def _package_manifest(data: Any, shown: str) -> list[Finding]:
    if not isinstance(data, dict):
        return [Finding("error", shown, "$", "package.json must be a JSON object", "json")]
    out = []
    for key in ("name", "version", "fhirVersions"):
        if key not in data:
            out.append(Finding("error", shown, key, f"package.json has no '{key}'", "conventions"))
    fv = data.get("fhirVersions")
    if isinstance(fv, list) and "4.0.1" not in fv:
        out.append(Finding("error", shown, "fhirVersions", f"fhirVersions {fv} does not include 4.0.1", "conventions"))
    return out


# What validate (and publish) take, for messages about a path they cannot use.
ACCEPTED = "a dist/ folder, a bundle .json, a package .tgz or a project folder"


def _load_path(path: Path, cfg: Config | None, engine: Engine | None) -> Loaded:
    """Read a dist/ folder, bundle, package, project or folder of resources; UsageError if it is none."""
    if not path.exists():
        raise UsageError(f"{path} does not exist; give {ACCEPTED} (default: the project's sources)")
    if not path.is_dir() and not path.is_file():
        raise UsageError(f"{path}: not a file or folder (a device or pipe); give {ACCEPTED}")
    project = _own_project(path, cfg)
    shown = rel(project.root, path) if project else str(path)
    if path.is_dir():
        if (path / "guideline.toml").is_file():
            return _load_sources(load_config(path), engine)
        if (path / "bundle.json").is_file():
            return _load_path(path / "bundle.json", cfg, engine)
        if (path / "package.tgz").is_file():
            return _load_path(path / "package.tgz", cfg, engine)
        found = sorted(p for p in path.rglob("*.json") if p.is_file())
        if not found:
            raise UsageError(
                f"{path}: nothing to validate in this folder (no guideline.toml, bundle.json, package.tgz "
                f"or *.json); give {ACCEPTED}"
            )
        findings: list[Finding] = []
        resources: list[tuple[dict[str, Any], str, str]] = []
        for p in found:
            pshown = rel(project.root, p) if project else str(p)
            data, problems = read_json_file(p, pshown)
            findings.extend(problems)
            if not problems:
                resources.extend(_file_resources(data, pshown, findings))
        return _load_resources(resources, shown, project, engine, findings)
    if path.name.endswith((".tgz", ".tar.gz")):
        findings = []
        resources = _read_package(path, shown, findings)
        return _load_resources(resources, shown, project, engine, findings)
    data, problems = read_json_file(path, shown, max_bytes=MAX_BUNDLE_BYTES)
    findings = list(problems)
    resources = [] if problems else _file_resources(data, shown, findings)
    return _load_resources(resources, shown, project, engine, findings)


def _file_resources(data: Any, shown: str, findings: list[Finding]) -> list[tuple[dict[str, Any], str, str]]:
    """The resources in one parsed file: a Bundle's entries, or the file's one resource (else a finding)."""
    if not is_resource(data):
        findings.append(not_a_resource(shown))
        return []
    if data["resourceType"] == "Bundle":
        return _bundle_resources(data, shown, findings)
    return [(data, shown, data["resourceType"])]


def load_subject(path: Path | str | None = None, cfg: Config | None = None, engine: Engine | None = None) -> Loaded:
    """Read what `validate` would check (layer 1 and CQL compile findings included), without checking it."""
    if path is None:
        return _load_sources(cfg or load_config(), engine)
    return _load_path(Path(path), cfg, engine)
