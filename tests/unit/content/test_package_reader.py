"""Verify that package.tgz loads in HAPI's FHIR package reader (NpmPackage), a reader we did not write."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from guideline.content.cql import Engine
from guideline.content.outputs import DEPENDENCIES
from guideline.core import toolchain
from tests.support.validate_fixtures import build_dist, copy_fixture

JAVA_SOURCE = Path(__file__).resolve().parents[2] / "support" / "java" / "NpmIndex.java"


def _server_classpath() -> str:
    """The HAPI server's classpath (written by scripts/setup when it builds server/)."""
    path = toolchain.repo_root() / "server" / "target" / "classpath.txt"
    if not path.is_file() or shutil.which("javac") is None:
        pytest.fail("run ./scripts/setup: it builds server/ (server/target/classpath.txt) this test needs, with a JDK")
    return path.read_text(encoding="utf-8").strip()


def _read_with_hapi(tgz: Path, canonical: str, work: Path) -> dict[str, list[str]]:
    """Compile and run tests/support/java/NpmIndex.java on the package; its key=value lines."""
    cp = _server_classpath()
    classes = work / "classes"
    classes.mkdir()
    subprocess.run(["javac", "-d", str(classes), "-cp", cp, str(JAVA_SOURCE)], check=True, timeout=180)
    out = subprocess.run(
        ["java", "-cp", f"{classes}:{cp}", "NpmIndex", str(tgz), canonical],
        check=True,
        timeout=180,
        capture_output=True,
        text=True,
    ).stdout
    seen: dict[str, list[str]] = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            seen.setdefault(key, []).append(value)
    return seen


def test_hapi_npm_package_reads_our_package(tmp_path: Path, engine: Engine) -> None:
    """Verify that HAPI's NpmPackage reads the built package: name, version, FHIR version, the declared
    dependencies (CPG, CRMI, extensions), our index (resources by type, lookup by canonical) and the
    ImplementationGuide resource with its dependsOn and resource list."""
    root = copy_fixture(tmp_path)
    dist = build_dist(root, engine)
    base = "http://example.org/fhir/fixture"
    seen = _read_with_hapi(dist / "package.tgz", f"{base}/PlanDefinition/FxRec01", tmp_path)
    manifest = json.loads(
        subprocess.run(
            ["tar", "xzf", str(dist / "package.tgz"), "-O", "package/package.json"],
            check=True,
            capture_output=True,
        ).stdout
    )
    assert seen["name"] == [manifest["name"]] and seen["version"] == [manifest["version"]]
    assert seen["fhirVersion"] == ["4.0.1"] and seen["canonical"] == [base]
    assert sorted(seen["dependency"]) == sorted(f"{d}#{v}" for d, (v, _u) in DEPENDENCIES.items())
    assert {"hl7.fhir.uv.cpg", "hl7.fhir.uv.crmi", "hl7.fhir.uv.extensions.r4"} <= set(DEPENDENCIES)
    assert seen["files.PlanDefinition"] == ["PlanDefinition-FxRec01.json"]
    assert seen["files.Library"] == ["Library-FHIRHelpers.json,Library-FxCommon.json,Library-FxRec01.json"]
    assert seen["files.ValueSet"][0].count(",") == 2
    assert seen["byCanonical"] == ["true"]
    [ig_file] = seen["files.ImplementationGuide"]
    ig = json.loads(seen["ig"][0])
    assert ig_file == f"ImplementationGuide-{ig['id']}.json"
    assert ig["packageId"] == manifest["name"] and ig["version"] == manifest["version"]
    assert ig["fhirVersion"] == ["4.0.1"] and ig["url"] == f"{base}/ImplementationGuide/{ig['id']}"
    assert {d["packageId"]: d["version"] for d in ig["dependsOn"]} == {
        d: v for d, (v, _u) in DEPENDENCIES.items() if d != "hl7.fhir.r4.core"
    }
    listed = {r["reference"]["reference"] for r in ig["definition"]["resource"]}
    bundle = json.loads((dist / "bundle.json").read_text(encoding="utf-8"))
    assert listed == {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"]}
