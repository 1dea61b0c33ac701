"""Verify `guideline validate`: layers, inputs, source mapping, output formats, exit codes, server layer."""

from __future__ import annotations

import base64
import json
import shutil
import tarfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from guideline.cli import main as cli
from guideline.content.cql import Engine
from guideline.core import toolchain
from guideline.core.config import load_config
from guideline.core.errors import ExitCode, ServerUnreachableError, ToolchainError
from guideline.remote.http import Client, RetryPolicy, Timeouts
from guideline.remote.server_validation import server_check
from guideline.validation import model, references, schema
from guideline.validation.report import ValidationReport
from guideline.validation.run import validate
from guideline.validation.subject import Item
from tests.support.netutil import serve_local
from tests.support.validate_fixtures import (
    AD,
    CQL_REC,
    PD,
    build_dist,
    copy_fixture,
    describe,
    edit_json,
    edit_text,
    run,
)


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    return copy_fixture(tmp_path)


@pytest.fixture()
def cli_engine(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Engine:
    """Route the CLI's shared engine to the session engine (one Node worker for the whole suite)."""
    monkeypatch.setattr("guideline.content.cql.shared_engine", lambda: engine)
    monkeypatch.setattr("guideline.content.package.shared_engine", lambda: engine)
    return engine


def test_fixture_is_clean(project: Path, engine: Engine) -> None:
    """Verify that the valid fixture passes every layer with no finding at all."""
    report = run(project, engine)
    assert report.findings == [], describe(report.findings)
    assert report.exit_code == ExitCode.OK
    assert (report.resources, report.libraries) == (8, 2)
    assert report.summary() == "0 errors, 0 warnings in 0 files"


def test_schema_validators_compile_once() -> None:
    """Verify that the schema is parsed once and each per-type validator is built once and reused."""
    assert schema.schema() is schema.schema()
    assert schema.schema().validator("PlanDefinition") is schema.schema().validator("PlanDefinition")


def test_tolerated_enums_are_explicit_and_small() -> None:
    """Verify that only Expression.language is tolerated, and that it is a real enum of the schema."""
    assert set(schema.TOLERATED_ENUMS) == {("Expression", "language")}
    spec = schema.schema().definitions["Expression"]["properties"]["language"]
    assert "text/cql-identifier" not in spec["enum"]  # the schema really rejects it: tolerance is needed


def _plan(**action: Any) -> dict[str, Any]:
    return {"resourceType": "PlanDefinition", "status": "draft", "action": [action]}


def test_cql_identifier_language_is_tolerated_but_required_bindings_are_not() -> None:
    """Verify that text/cql-identifier passes, an unknown language warns, and a bad status still errors."""
    cond: dict[str, Any] = {
        "kind": "applicability",
        "expression": {"language": "text/cql-identifier", "expression": "X"},
    }
    assert schema.schema_findings(_plan(condition=[cond]), "f", "PlanDefinition") == []
    cond["expression"]["language"] = "text/x-made-up"
    [warn] = schema.schema_findings(_plan(condition=[cond]), "f", "PlanDefinition")
    assert (warn.severity, warn.location) == (
        "warning",
        "PlanDefinition.action[0].condition[0].expression.language",
    )
    bad = {"resourceType": "PlanDefinition", "status": "bogus"}
    [err] = schema.schema_findings(bad, "f", "PlanDefinition")
    assert (err.severity, err.location) == ("error", "PlanDefinition.status")
    assert "required binding" in err.message


def test_r4b_only_element_is_rejected_by_the_r4_schema() -> None:
    """Verify that an R4B-only element (PlanDefinition.subjectCanonical) is an R4 schema error."""
    plan = {"resourceType": "PlanDefinition", "status": "draft", "subjectCanonical": "http://x.org/a"}
    found = schema.schema_findings(plan, "f", "PlanDefinition")
    assert [f.location for f in found] == ["PlanDefinition.subjectCanonical"]
    assert model.model_findings(plan, "f", "PlanDefinition", []) == []


def test_r4_types_without_r4b_model_skip_the_model_layer() -> None:
    """Verify that an R4-only resource type is judged by the schema alone, not failed by the R4B model."""
    res = {"resourceType": "EffectEvidenceSynthesis", "status": "draft"}
    assert schema.schema_findings(res, "f", "EffectEvidenceSynthesis")  # its R4 required elements
    assert model.model_findings(res, "f", "EffectEvidenceSynthesis", []) == []


def test_dist_folder_bundle_and_package_validate_clean(project: Path, engine: Engine) -> None:
    """Verify that a built dist/, its bundle.json and its package.tgz all validate clean."""
    dist = build_dist(project, engine)
    for target in (dist, dist / "bundle.json", dist / "package.tgz"):
        report = run(project, engine, target)
        assert report.findings == [], f"{target}:\n{describe(report.findings)}"
        # The package also carries its ImplementationGuide (validated clean like the rest).
        assert report.resources == (9 if target.name == "package.tgz" else 8)


def test_dist_findings_point_at_source_files(project: Path, engine: Engine) -> None:
    """Verify that a finding in the project's own dist/ names the source file and element, not the bundle."""
    dist = build_dist(project, engine)
    bundle = json.loads((dist / "bundle.json").read_text(encoding="utf-8"))
    for e in bundle["entry"]:
        if e["resource"]["resourceType"] == "PlanDefinition":
            e["resource"]["action"][0]["priority"] = "asap"
    (dist / "bundle.json").write_text(json.dumps(bundle), encoding="utf-8")
    report = run(project, engine, dist)
    assert [(f.file, f.location) for f in report.errors] == [(PD, "PlanDefinition.action[0].priority")]


def test_package_members_are_named_in_findings(project: Path, engine: Engine, tmp_path: Path) -> None:
    """Verify that a resource inside a foreign package is located as package.tgz!member."""
    dist = build_dist(project, engine)
    out = tmp_path / "foreign.tgz"
    with tarfile.open(dist / "package.tgz") as src, tarfile.open(out, "w:gz") as dst:
        for m in src:
            data = src.extractfile(m)
            raw = data.read() if data else b""
            if m.name.endswith("ActivityDefinition-FxDiet.json"):
                raw = raw.replace(b'"ServiceRequest"', b'"ServiceRequestt"')
            m.size = len(raw)
            import io

            dst.addfile(m, io.BytesIO(raw))
    shutil.rmtree(project)  # nothing left to map back to
    report = validate(out, engine=engine)
    kinds = [(f.file, f.location) for f in report.errors]
    assert (f"{out}!package/ActivityDefinition-FxDiet.json", "ActivityDefinition.kind") in kinds, describe(
        report.findings
    )


def test_stale_dist_is_reported(project: Path, engine: Engine) -> None:
    """Verify that validating dist/ after editing cql/ warns that dist/ is stale."""
    dist = build_dist(project, engine)
    edit_text(project, CQL_REC, 'define "Advice":', '// edited after the build\ndefine "Advice":')
    report = run(project, engine, dist)
    assert [(f.file, f.location, f.severity) for f in report.findings] == [(CQL_REC, "1:1", "warning")]
    assert "run `guideline build`" in report.findings[0].message


def test_text_only_cql_in_a_foreign_bundle_is_compiled(project: Path, engine: Engine, tmp_path: Path) -> None:
    """Verify that a Library carrying only text/cql is compiled so its defines can still be checked."""
    dist = build_dist(project, engine)
    bundle = json.loads((dist / "bundle.json").read_text(encoding="utf-8"))
    for e in bundle["entry"]:
        r = e["resource"]
        if r["resourceType"] == "Library" and r["id"] != "FHIRHelpers":
            r["content"] = [c for c in r["content"] if c["contentType"] == "text/cql"]
        if r["resourceType"] == "PlanDefinition":
            r["action"][0]["condition"][0]["expression"]["expression"] = "Nope"
    out = tmp_path / "foreign.json"
    out.write_text(json.dumps(bundle), encoding="utf-8")
    report = validate(out, engine=engine)
    assert [(f.location, f.layer) for f in report.errors] == [
        ("Bundle.entry[7].resource.action[0].condition[0].expression", "cql")
    ], describe(report.findings)


def test_folder_of_loose_resources(project: Path, engine: Engine) -> None:
    """Verify that a folder without guideline.toml or dist files is read as loose resource files."""
    folder = project / "fhir_resources" / "valueset"
    report = validate(folder, engine=engine)
    assert report.resources == 3
    assert all(f.file.startswith("fhir_resources/valueset/") for f in report.findings), describe(report.findings)


def test_text_output_groups_by_file() -> None:
    """Verify that text output lists each file once, errors first, then the summary line."""
    from guideline.core.errors import Finding

    report = ValidationReport(
        "sources",
        [
            Finding("warning", "b.json", "X.a", "warn b", "schema"),
            Finding("error", "a.cql", "3:4", "err a", "cql"),
            Finding("error", "b.json", "X.b", "err b", "schema"),
        ],
    )
    lines = report.render_text().splitlines()
    assert lines[:5] == [
        "a.cql",
        "  error: 3:4: err a [cql]",
        "b.json",
        "  error: X.b: err b [schema]",
        "  warning: X.a: warn b [schema]",
    ]
    assert lines[-1] == "2 errors, 1 warning in 2 files"


def test_json_output_is_one_valid_operation_outcome(project: Path, engine: Engine) -> None:
    """Verify that --format json's OperationOutcome is valid R4 and carries file, path and line:col."""
    edit_text(project, CQL_REC, "'Offer a low-calorie diet'", "1 + 'x'")
    edit_json(project, AD, lambda d: d.update(kind="Nope"))
    oo = run(project, engine).operation_outcome()
    assert schema.schema_findings(oo, "oo", "OperationOutcome") == []
    assert model.model_findings(oo, "oo", "OperationOutcome", []) == []
    by_file = {i["location"][0]: i for i in oo["issue"]}
    cql_issue = by_file[CQL_REC]
    assert cql_issue["location"][1] == f"{CQL_REC}:17:3"
    assert {"url": schema_ext("line"), "valueInteger": 17} in cql_issue["extension"]
    assert by_file[AD]["expression"] == ["ActivityDefinition.kind"]
    clean = ValidationReport("x").operation_outcome()
    assert clean["issue"][0]["severity"] == "information"


def schema_ext(kind: str) -> str:
    return f"http://hl7.org/fhir/StructureDefinition/operationoutcome-issue-{kind}"


def test_cli_exit_codes_and_formats(project: Path, cli_engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    """Verify exit codes 0 (clean), 1 (errors), 2 (usage) and that json output is one OperationOutcome."""
    assert cli.main(["validate", str(project)]) == ExitCode.OK
    assert capsys.readouterr().out.splitlines()[-1] == "0 errors, 0 warnings in 0 files"
    edit_json(project, PD, lambda d: d["action"][0].update(priority="asap"))
    assert cli.main(["validate", str(project), "--format", "json"]) == ExitCode.INVALID_CONTENT
    out = json.loads(capsys.readouterr().out)
    assert out["resourceType"] == "OperationOutcome" and out["issue"][0]["severity"] == "error"
    assert cli.main(["validate", str(project / "nope")]) == ExitCode.USAGE
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["validate", "--format", "xml"]) == ExitCode.USAGE
    assert "Traceback" not in capsys.readouterr().err


def test_cli_toolchain_missing_exits_3(
    project: Path, cli_engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Verify that a missing FHIR schema is exit code 3 with a set-up hint, not a traceback."""

    def missing() -> Path:
        raise ToolchainError(f"FHIR R4 JSON schema not found; {toolchain.SETUP_HINT}")

    monkeypatch.setattr(toolchain, "fhir_schema_path", missing)
    schema.schema.cache_clear()
    try:
        assert cli.main(["validate", str(project)]) == ExitCode.TOOLCHAIN
    finally:
        schema.schema.cache_clear()
    assert "run ./scripts/setup" in capsys.readouterr().err


def test_internal_error_becomes_a_finding(project: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Verify that a crashing check is reported as an 'internal' finding instead of a traceback."""

    def boom(_s: Any) -> Any:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(references, "reference_findings", boom)
    report = run(project, engine)
    assert [(f.layer, f.severity) for f in report.findings] == [("internal", "error")]
    assert "ZeroDivisionError" in report.findings[0].message


# ---------------------------------------------------------------- layer 8: server $validate


class _Stub(BaseHTTPRequestHandler):
    fhir_version = "4.0.1"
    posted: list[str] = []

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._send(200, {"resourceType": "CapabilityStatement", "fhirVersion": self.fhir_version})

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        rtype = self.path.strip("/").split("/")[-2]
        self.posted.append(rtype)
        issue: dict[str, Any] = {
            "severity": "information",
            "code": "informational",
            "diagnostics": "No issues detected",
        }
        if rtype == "PlanDefinition":
            issue = {
                "severity": "error",
                "code": "invalid",
                "diagnostics": "Profile rule failed",
                "expression": ["PlanDefinition.action[0].priority"],
            }
        self._send(412 if rtype == "PlanDefinition" else 200, {"resourceType": "OperationOutcome", "issue": [issue]})

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture()
def stub_server() -> Iterator[str]:
    _Stub.posted = []
    with serve_local(_Stub) as port:
        yield f"http://127.0.0.1:{port}/fhir"


def test_server_issues_are_merged_as_server_findings(project: Path, engine: Engine, stub_server: str) -> None:
    """Verify that every resource is POSTed to $validate and its OperationOutcome issues become findings."""
    with Client(stub_server) as client:
        report = validate(cfg=load_config(project), engine=engine, server_check=server_check(client))
    assert sorted(_Stub.posted) == sorted(["ValueSet"] * 3 + ["Library"] * 3 + ["ActivityDefinition", "PlanDefinition"])
    assert [(f.file, f.location, f.message, f.layer) for f in report.findings] == [
        (PD, "PlanDefinition.action[0].priority", "server: Profile rule failed", "server")
    ]


def test_server_paths_are_relocated_into_bundles() -> None:
    """Verify that a server's element path is re-anchored to the bundle entry it came from."""
    from guideline.remote.server_validation import outcome_findings

    item = Item({"resourceType": "Library"}, "b.json", "Bundle.entry[4].resource")
    oo = {"issue": [{"severity": "warning", "code": "x", "diagnostics": "d", "expression": ["Library.name"]}]}
    [f] = outcome_findings(oo, item)
    assert (f.location, f.severity) == ("Bundle.entry[4].resource.name", "warning")


def test_unreachable_server_raises_and_exits_4(
    project: Path, cli_engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Verify that an unreachable --server raises ServerUnreachableError and the CLI exits 4."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again on exit: nothing listens there
    url = f"http://127.0.0.1:{port}/fhir"

    def fast_client(args: Any, base_url: str | None = None) -> Client:
        return Client(url, retry=RetryPolicy(attempts=1), timeouts=Timeouts(connect_s=2, read_s=5))

    with pytest.raises(ServerUnreachableError):
        validate(cfg=load_config(project), engine=cli_engine, server_check=server_check(fast_client(None)))
    monkeypatch.setattr("guideline.cli.common.client_from_args", fast_client)
    assert cli.main(["validate", str(project), "--server", url]) == ExitCode.SERVER_UNREACHABLE
    assert "Traceback" not in capsys.readouterr().err


def test_compile_error_in_an_include_does_not_claim_missing_cql(project: Path, engine: Engine) -> None:
    """Verify that a CQL error in an included library is reported once, not as 'Library has no CQL'."""
    edit_text(project, "cql/FxCommon.cql", 'exists "GL Diagnoses"', 'exists "GL Diagnoses" +')
    report = run(project, engine)
    assert {f.file for f in report.errors} == {"cql/FxCommon.cql"}, describe(report.findings)


def test_any_code_system_named_in_cql_is_a_valid_depends_on(project: Path, engine: Engine) -> None:
    """Verify that a CQL codesystem (Library depends-on) is not a dangling canonical, just a URI to vet."""
    edit_text(
        project,
        "cql/FxCommon.cql",
        "codesystem \"LOINC\": 'http://loinc.org'",
        "codesystem \"LOINC\": 'http://loinc.org'\ncodesystem \"CPT\": 'http://www.ama-assn.org/go/cpt'",
    )
    report = run(project, engine)
    assert report.findings == [], describe(report.findings)


@pytest.mark.parametrize(
    "text",
    [
        "Unknown code 'http://hl7.org/fhir/expression-language#text/cql-identifier'",
        "The extension http://hl7.org/fhir/StructureDefinition/cqf-strengthOfRecommendation is not allowed "
        "to be used at this point (this element is [BackboneElement, PlanDefinition.action])",
        "Profile reference 'http://hl7.org/fhir/uv/cpg/StructureDefinition/cpg-recommendationdefinition' has "
        "not been checked because it could not be found",
    ],
)
def test_known_server_limits_are_information(text: str) -> None:
    """Verify that the few known HAPI R4-vs-CPG false positives are kept, but as information."""
    from guideline.remote.server_validation import KNOWN_SERVER_LIMITS, outcome_findings

    assert len(KNOWN_SERVER_LIMITS) == 3
    item = Item({"resourceType": "PlanDefinition"}, "p.json", "PlanDefinition")
    oo = {"issue": [{"severity": "error", "code": "x", "diagnostics": text, "location": ["Line[0] Col[0]"]}]}
    [f] = outcome_findings(oo, item)
    assert (f.severity, f.location) == ("information", "PlanDefinition")
    assert "not counted" in f.message
    other = {"issue": [{"severity": "error", "code": "x", "diagnostics": "Unknown code 'http://x#y'"}]}
    assert outcome_findings(other, item)[0].severity == "error"


def test_plan_with_two_libraries_names_no_primary_library(project: Path, engine: Engine) -> None:
    """Verify that CQL identifiers in a plan with two libraries are an error: there is no one primary library."""
    edit_json(project, PD, lambda d: d.update(library=["Library/FxRec01", "Library/FxCommon"]))
    report = run(project, engine)
    assert [(f.file, f.location, f.layer) for f in report.errors] == [(PD, "PlanDefinition.library", "cql")], describe(
        report.findings
    )
    assert "has 2 libraries" in report.errors[0].message


def test_cli_fails_on_broken_cql_carried_by_dist(
    project: Path, cli_engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    """Verify that validate of dist/ compiles the CQL the bundle carries: a syntax error appended to a
    Library's text/cql (its ELM untouched) exits 1 and names the Library and the CQL line:col."""
    bundle_path = build_dist(project, cli_engine) / "bundle.json"
    assert cli.main(["validate", str(bundle_path)]) == ExitCode.OK
    capsys.readouterr()
    bundle = json.loads(bundle_path.read_text(encoding="utf-8"))
    lib = next(e["resource"] for e in bundle["entry"] if e["resource"]["id"] == "FxCommon")
    cql = next(c for c in lib["content"] if c["contentType"] == "text/cql")
    text = base64.b64decode(cql["data"]).decode("utf-8")
    cql["data"] = base64.b64encode((text + '\ndefine "Broken": (1 +\n').encode("utf-8")).decode("ascii")
    bundle_path.write_text(json.dumps(bundle), encoding="utf-8")
    assert cli.main(["validate", str(bundle_path)]) == ExitCode.INVALID_CONTENT
    out = capsys.readouterr().out
    lines = text.count("\n") + 3
    assert f"error: Library/FxCommon CQL {lines}:1: Syntax error" in out, out


def test_fhir_version_4_0_1_is_allowed_despite_the_schema() -> None:
    """Verify that ImplementationGuide.fhirVersion 4.0.1 passes (the R4 schema's enum stops at 4.0.0)
    while any other code outside the enum is still a required-binding error."""
    spec = schema.schema().definitions["ImplementationGuide"]["properties"]["fhirVersion"]
    assert "4.0.1" not in spec["items"]["enum"]  # the schema really rejects it: the erratum is needed
    assert set(schema.SCHEMA_ERRATA) == {
        ("ImplementationGuide", "fhirVersion"),
        ("CapabilityStatement", "fhirVersion"),
        ("StructureDefinition", "fhirVersion"),
    }
    ig = {"resourceType": "ImplementationGuide", "status": "draft", "fhirVersion": ["4.0.1"]}
    assert schema.schema_findings(ig, "f", "ImplementationGuide") == []
    ig["fhirVersion"] = ["4.0.9"]
    [err] = schema.schema_findings(ig, "f", "ImplementationGuide")
    assert err.location == "ImplementationGuide.fhirVersion[0]" and "required binding" in err.message
