"""Verify `guideline build`: generated Library content, stamping, outputs, reproducibility and atomic writes."""

from __future__ import annotations

import base64
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest

from guideline.cli import main as cli
from guideline.content import outputs as build_mod
from guideline.content.cql import Engine
from guideline.content.outputs import build
from guideline.content.package import Package, build_package
from guideline.core.config import Config, load_config
from guideline.core.errors import ContentError, ExitCode
from guideline.core.fhir import FHIRHELPERS_URL


@pytest.fixture(scope="module")
def pkg(config: Config, engine: Engine) -> Package:
    return build_package(config, engine)


def _content(lib: dict[str, Any], ctype: str) -> bytes:
    return base64.b64decode(next(c["data"] for c in lib["content"] if c["contentType"] == ctype))


def test_library_content_is_generated_from_cql(pkg: Package, config: Config) -> None:
    """Verify that every project Library embeds exactly its cql/ source and the ELM the build compiled."""
    libs = [r for r in pkg.resources if r["resourceType"] == "Library" and r["id"] != "FHIRHelpers"]
    assert {r["id"] for r in libs} == {p.stem for p in config.cql_dir.glob("*.cql")}
    for lib in libs:
        assert _content(lib, "text/cql") == (config.cql_dir / f"{lib['id']}.cql").read_bytes()
        assert json.loads(_content(lib, "application/elm+json")) == pkg.elm[lib["id"]]
        assert lib["name"] == lib["id"]


def test_library_metadata_is_derived_from_elm(pkg: Package, config: Config) -> None:
    """Verify depends-on (with versions), parameters, data requirements and recorded translator options."""
    lib = pkg.by_key["Library/GLR1InsulinAssessment"]
    deps = {a["resource"] for a in lib["relatedArtifact"] if a["type"] == "depends-on"}
    assert f"{FHIRHELPERS_URL}|4.0.1" in deps
    assert f"{config.package.canonical}/Library/GLCommon|{config.package.version}" in deps
    assert any(r.endswith("|4.0.1") and "FHIR-ModelInfo" in r for r in deps)
    common = pkg.by_key["Library/GLCommon"]
    ins = {p["name"]: p for p in common["parameter"] if p["use"] == "in"}
    assert ins["Lab Lookback"]["type"] == "Quantity"
    outs = {p["name"]: p for p in common["parameter"] if p["use"] == "out"}
    assert outs["Has Generalized Lipodystrophy"]["type"] == "boolean"
    # The recommendation's data requirements include what its included GLCommon retrieves (HAPI prefetch).
    types = {d["type"] for d in lib["dataRequirement"]}
    assert {"Condition", "Observation"} <= types
    opts = next(c for c in lib["contained"] if c["id"] == "options")
    values = [p["valueString"] for p in opts["parameter"]]
    assert pkg.translator["translator"] in values
    assert all(o in values for o in config.cql_options["options"])


def test_everything_is_stamped_from_config(pkg: Package, config: Config) -> None:
    """Verify url, version, date, status and narrative on every artifact; relative canonicals are expanded."""
    p = config.package
    for r in pkg.resources:
        assert r["text"]["status"] == "generated" and r["text"]["div"].startswith("<div xmlns=")
        if r["id"] == "FHIRHelpers":
            continue
        assert r["url"] == f"{p.canonical}/{r['resourceType']}/{r['id']}"
        assert (r["version"], r["date"], r["status"]) == (p.version, p.date, p.status)
    text = json.dumps(pkg.resources)
    assert '"Library/GLCommon"' not in text and '"ActivityDefinition/' not in text
    plan = pkg.by_key["PlanDefinition/GLR2Bromocriptine"]
    assert plan["library"] == [f"{p.canonical}/Library/GLR2Bromocriptine|{p.version}"]


def test_outputs_and_reproducibility(tmp_path: Path, config: Config, engine: Engine) -> None:
    """Verify dist/ contents and that two builds of unchanged sources are byte-identical."""
    a = build(tmp_path / "a", config, engine)
    b = build(tmp_path / "b", config, engine)
    files_a = {p.relative_to(a.out_dir): p.read_bytes() for p in a.files}
    files_b = {p.relative_to(b.out_dir): p.read_bytes() for p in b.files}
    assert files_a == files_b
    bundle = json.loads(files_a[Path("bundle.json")])
    assert bundle["type"] == "transaction"
    for e in bundle["entry"]:
        assert e["request"] == {"method": "PUT", "url": f"{e['resource']['resourceType']}/{e['resource']['id']}"}
    with tarfile.open(a.out_dir / "package.tgz") as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("package/package.json").read())  # type: ignore[union-attr]
        index = json.loads(tar.extractfile("package/.index.json").read())  # type: ignore[union-attr]
    assert manifest["name"] == config.package.id and manifest["version"] == config.package.version
    assert manifest["fhirVersions"] == ["4.0.1"] and manifest["canonical"] == config.package.canonical
    assert "hl7.fhir.r4.core" in manifest["dependencies"]
    # Every resource of the bundle, plus the ImplementationGuide describing the package.
    assert len(index["files"]) == len(bundle["entry"]) + 1
    assert index["index-version"] == 2
    assert [f["resourceType"] for f in index["files"]].count("ImplementationGuide") == 1
    assert all(f"package/{f['filename']}" in names for f in index["files"])
    assert {p.name for p in (a.out_dir / "elm").iterdir()} == {f"{n}.json" for n in a.package.elm}


def test_interrupted_build_leaves_previous_dist_intact(
    tmp_path: Path, config: Config, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verify that a failure while writing keeps the old dist/ whole and leaves no temp folder behind."""
    out = tmp_path / "dist"
    first = build(out, config, engine)
    before = {p: p.read_bytes() for p in first.files}

    def boom(_: Package) -> bytes:
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C half-way through the outputs

    monkeypatch.setattr(build_mod, "npm_package", boom)
    with pytest.raises(KeyboardInterrupt):
        build(out, config, engine)
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["dist"]


def _project_copy(tmp_path: Path, config: Config) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    for name in ("guideline.toml",):
        shutil.copy(config.root / name, root / name)
    for d in ("cql", "fhir_resources"):
        shutil.copytree(config.root / d, root / d)
    return root


def test_all_compile_errors_are_reported_with_positions(tmp_path: Path, config: Config, engine: Engine) -> None:
    """Verify that the build fails on CQL errors, naming each with file:line:col, not just the first."""
    root = _project_copy(tmp_path, config)
    src = root / "cql" / "GLR4Diet.cql"
    lines = src.read_text(encoding="utf-8").splitlines()
    lines += ["define \"Broken One\": 1 + 'a'", 'define "Broken Two": NoSuchThing']
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ContentError) as err:
        build_package(load_config(root), engine)
    cql_errors = [f for f in err.value.findings if f.file == "cql/GLR4Diet.cql"]
    assert [f.location for f in cql_errors] == [f"{len(lines) - 1}:22", f"{len(lines)}:22"]
    assert "operator Add" in cql_errors[0].message and "NoSuchThing" in cql_errors[1].message


def test_cli_build_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that `guideline build` exits 0 and lists its outputs, and exits 2 on a bad flag."""
    assert cli.main(["build", "--out", str(tmp_path / "d")]) == 0
    assert "bundle.json" in capsys.readouterr().out
    assert cli.main(["build", "--no-such-flag"]) == ExitCode.USAGE
