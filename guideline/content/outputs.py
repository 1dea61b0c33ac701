"""The build's outputs: the transaction Bundle, the FHIR NPM package and dist/ written atomically."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guideline.content.cql import Engine
from guideline.content.package import Package, build_package
from guideline.core.config import Config, load_config
from guideline.core.fsutil import check_out_dir, write_tree


def _dumps(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def transaction_bundle(pkg: Package) -> dict[str, Any]:
    """A transaction Bundle that PUTs every resource by its stable id (all-or-nothing on the server)."""
    return {
        "resourceType": "Bundle",
        "id": f"{pkg.config.package.name}-{pkg.config.package.version}",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"{pkg.config.package.canonical}/{r['resourceType']}/{r['id']}",
                "resource": r,
                "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
            }
            for r in pkg.resources
        ],
    }


# The packages the artifacts' profiles and extensions come from (FHIR NPM ids and versions):
# meta.profile names CPG STU2 (hl7.fhir.uv.cpg 2.0.0) and CRMI STU1 (hl7.fhir.uv.crmi 1.0.0)
# StructureDefinitions; the cqf-* extensions are defined for R4 in hl7.fhir.uv.extensions.r4,
# at 5.1.0, the version CPG 2.0.0 itself depends on (its QA page, hl7.org/fhir/uv/cpg/STU2).
DEPENDENCIES: dict[str, tuple[str, str]] = {
    "hl7.fhir.r4.core": ("4.0.1", "http://hl7.org/fhir"),
    "hl7.fhir.uv.cpg": ("2.0.0", "http://hl7.org/fhir/uv/cpg"),
    "hl7.fhir.uv.crmi": ("1.0.0", "http://hl7.org/fhir/uv/crmi"),
    "hl7.fhir.uv.extensions.r4": ("5.1.0", "http://hl7.org/fhir/extensions"),
}


def implementation_guide(pkg: Package) -> dict[str, Any]:
    """The ImplementationGuide resource of the NPM package: identity, dependencies, the resource list."""
    p = pkg.config.package
    rid = p.id.replace("_", "-")[:64]
    return {
        "resourceType": "ImplementationGuide",
        "id": rid,
        "url": f"{p.canonical}/ImplementationGuide/{rid}",
        "version": p.version,
        "name": p.name,
        "title": p.title,
        "status": p.status,
        "experimental": p.experimental,
        "date": p.date,
        "publisher": p.publisher,
        "packageId": p.id,
        "license": p.license,
        "fhirVersion": [pkg.config.fhir_version],
        "dependsOn": [
            {"id": dep.replace(".", "-"), "uri": f"{uri}/ImplementationGuide/{dep}", "packageId": dep, "version": ver}
            for dep, (ver, uri) in DEPENDENCIES.items()
            if dep != "hl7.fhir.r4.core"
        ],
        "definition": {
            "resource": [
                {
                    "reference": {"reference": f"{r['resourceType']}/{r['id']}"},
                    "name": str(r.get("title") or r.get("name") or r["id"]),
                    "exampleBoolean": False,
                }
                for r in pkg.resources
            ]
        },
    }


def _npm_package_json(pkg: Package) -> dict[str, Any]:
    p = pkg.config.package
    return {
        "name": p.id,
        "version": p.version,
        "canonical": p.canonical,
        "url": p.canonical,
        "title": p.title,
        "description": p.title,
        "fhirVersions": [pkg.config.fhir_version],
        "dependencies": {dep: ver for dep, (ver, _uri) in DEPENDENCIES.items()},
        "author": p.publisher,
        "license": p.license,
        "type": "fhir.ig",
        "date": p.date.replace("-", "") + "000000",
    }


def _tar_bytes(files: list[tuple[str, bytes]], mtime: int) -> bytes:
    """A reproducible .tgz: fixed order, owner, mode and times (gzip header time too)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), mtime, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=mtime, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def npm_package(pkg: Package) -> bytes:
    """The FHIR NPM package (`package.tgz`): package.json (with its dependencies), .index.json, the
    ImplementationGuide and one file per resource; byte-reproducible."""
    files: list[tuple[str, bytes]] = [("package/package.json", _dumps(_npm_package_json(pkg)))]
    index = []
    for r in [implementation_guide(pkg), *pkg.resources]:
        fname = f"{r['resourceType']}-{r['id']}.json"
        files.append((f"package/{fname}", _dumps(r)))
        entry = {"filename": fname, "resourceType": r["resourceType"], "id": r["id"]}
        for k in ("url", "version", "kind", "type"):
            if isinstance(r.get(k), str):
                entry[k] = r[k]
        index.append(entry)
    files.insert(1, ("package/.index.json", _dumps({"index-version": 2, "files": index})))
    # The archive's timestamps are the release date, so two builds of one release are identical.
    mtime = int(dt.datetime.fromisoformat(pkg.config.package.date).replace(tzinfo=dt.UTC).timestamp())
    return _tar_bytes(files, mtime)


@dataclass
class BuildResult:
    """What `build` wrote: the package it built, the output folder and the files in it."""

    package: Package
    out_dir: Path
    files: list[Path]


def write_outputs(pkg: Package, out_dir: Path) -> BuildResult:
    """Write dist/ atomically (see fsutil.write_tree): an interrupted build never leaves it half-written.

    Raises UsageError (before writing anything) when `out_dir` is not a folder it may replace.
    """
    check_out_dir(out_dir, "bundle.json", "build")
    files = {"bundle.json": _dumps(transaction_bundle(pkg)), "package.tgz": npm_package(pkg)}
    for name, elm in sorted(pkg.elm.items()):
        files[f"elm/{name}.json"] = _dumps(elm)
    written = write_tree(out_dir, files)
    return BuildResult(pkg, out_dir.resolve(), sorted(written))


def build(out_dir: Path | None = None, cfg: Config | None = None, engine: Engine | None = None) -> BuildResult:
    """Programmatic `guideline build`: compile, assemble, write dist/ atomically."""
    cfg = cfg or load_config()
    out = out_dir or cfg.root / "dist"
    check_out_dir(out, "bundle.json", "build")  # before the slow compile, not only before writing
    pkg = build_package(cfg, engine)
    return write_outputs(pkg, out)
