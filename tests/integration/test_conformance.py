"""Verify `guideline conformance` against real servers: ours (full agreement), a broken one, bad input.

Also checks the community layout's expected values against HAPI's own Library/$evaluate (the Java
CQL engine of clinical-reasoning), which returns every value, where the JVM batch evaluator returns
only Booleans and text.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import requests

from guideline.cli import main as cli
from guideline.content.cql import Engine
from guideline.content.package import Package, build_package
from guideline.core.config import Config, load_config
from guideline.core.errors import ExitCode
from guideline.core.evaltime import time_parameters
from guideline.evaluation.community import diff_parameters, expected_results, read_cases
from guideline.evaluation.patient import ensure_loaded
from guideline.remote.http import Client
from guideline.remote.patients import load_patient
from guideline.remote.publish import publish_resources
from tests.support import CASES_DIR, ROOT

pytestmark = pytest.mark.server

# Between them these fire every recommendation and leave each one out somewhere; every scenario on
# every channel of this server is already compared in test_server_cases.py (~7-12 s a scenario here).
SUBSET = ["gl-adult-no-data", "r2-insulin-just-above", "r3-type2-diabetes", "r5-child", "no-gl-metabolic"]


def _cds(server_url: str) -> str:
    return server_url.removesuffix("/fhir") + "/cds-services"


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    rc = cli.main(["conformance", *args, "--json"])
    out = capsys.readouterr().out
    return rc, json.loads(out) if out.strip() else {}


def _gone(server_url: str, ids: list[str]) -> bool:
    return all(requests.get(f"{server_url}/Patient/{i}", timeout=30).status_code in (404, 410) for i in ids)


def test_our_server_agrees_fully(
    published: dict[str, Any], server_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Verify full agreement on both channels (exit 0), the report file, and that the loaded patients are deleted."""
    report = tmp_path / "report.json"
    args = ["--server", server_url, "--cds", _cds(server_url), "--report", str(report)]
    rc, doc = _run(args + [a for c in SUBSET for a in ("--case", c)], capsys)
    assert rc == ExitCode.OK, json.dumps(doc.get("disagreements"), indent=1)
    assert json.loads(report.read_text(encoding="utf-8")) == doc
    assert doc["agreement"] is True and doc["publish"]["status"] == "unchanged"
    assert doc["summary"] == {"apply": {"agree": len(SUBSET)}, "cds": {"agree": len(SUBSET)}}
    assert [c["case"] for c in doc["cases"]] == SUBSET
    patients = [c["patient"] for c in doc["cases"]]
    assert all(p.startswith(doc["idPrefix"]) for p in patients)
    assert doc["cleanup"].startswith("deleted ") and _gone(server_url, patients)


def test_keep_and_not_supported(published: dict[str, Any], server_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Verify --keep leaves the patient, and a CDS base without discovery is "not supported", not a disagreement."""
    rc, doc = _run(
        ["--server", server_url, "--cds", server_url + "/no-cds-here", "--case", SUBSET[0], "--keep"], capsys
    )
    assert rc == ExitCode.OK
    assert doc["channels"]["cds"].startswith("not supported")
    assert doc["cases"][0]["cds"]["status"] == "not supported"
    assert doc["cases"][0]["apply"]["status"] == "agree"
    pid = doc["cases"][0]["patient"]
    assert requests.get(f"{server_url}/Patient/{pid}", timeout=30).status_code == 200
    assert doc["cleanup"] == f"kept 2 resources (ids starting {doc['idPrefix']})"
    # Remove it here: the test, not the command, kept it.
    with Client(server_url) as client:
        client.post_json(
            "",
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {"request": {"method": "DELETE", "url": f"{rtype}/{doc['idPrefix']}{rid}"}}
                    for rtype, rid in (("Condition", f"{SUBSET[0]}-cond-1"), ("Patient", SUBSET[0]))
                ],
            },
        )


def _broken_project(tmp: Path) -> Config:
    """A copy of the project whose fasting insulin threshold is 100 times higher, under the same version."""
    for name in ("guideline.toml", "cql", "fhir_resources"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp / name)
    cql = tmp / "cql" / "GLCommon.cql"
    text = cql.read_text(encoding="utf-8")
    changed = text.replace(
        '"Fasting Insulin Threshold" System.Quantity default 25 ',
        '"Fasting Insulin Threshold" System.Quantity default 2500 ',
    )
    assert changed != text
    cql.write_text(changed, encoding="utf-8")
    return load_config(tmp)


@pytest.fixture(scope="module")
def broken_server(fresh_server: str, engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Package]:
    """A second, empty server holding the broken package (published there first, so no cached ELM is older)."""
    broken = build_package(_broken_project(tmp_path_factory.mktemp("broken")), engine)
    with Client(fresh_server) as client:
        publish_resources(client, broken.resources)
    return fresh_server, broken


def test_a_broken_server_is_reported(broken_server: tuple[str, Package], capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that a server holding a changed threshold under our version exits 9 and names the disagreeing cases."""
    fresh_server = broken_server[0]
    cases = ["r2-insulin-just-above", "gl-adult-no-data"]
    rc, doc = _run(
        ["--server", fresh_server, "--cds", _cds(fresh_server), *[a for c in cases for a in ("--case", c)]], capsys
    )
    assert rc == ExitCode.DISAGREEMENT
    assert doc["publish"]["status"] == "differs" and "Library/GLCommon" in doc["publish"]["resources"]
    assert doc["disagreements"] == [
        {"case": "r2-insulin-just-above", "channel": "apply"},
        {"case": "r2-insulin-just-above", "channel": "cds"},
    ]
    r2 = doc["cases"][0]
    assert "GLR2Bromocriptine" in r2["apply"]["expected"] and "GLR2Bromocriptine" not in r2["apply"]["got"]
    assert doc["cases"][1]["apply"]["status"] == doc["cases"][1]["cds"]["status"] == "agree"
    # The text form says the same in words.
    assert cli.main(["conformance", "--server", fresh_server, "--case", cases[0]]) == ExitCode.DISAGREEMENT
    out = capsys.readouterr().out
    assert "DISAGREE" in out and "1 disagreement(s): r2-insulin-just-above (apply)" in out


def test_bad_input_exits_with_its_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that an unreachable server (4), a missing token file (7) and an unknown case (2) are one clear line."""
    assert cli.main(["conformance", "--server", "http://127.0.0.1:9/fhir", "--case", SUBSET[0], "--timeout", "2"]) == 4
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "127.0.0.1:9" in err and "Traceback" not in err
    missing = tmp_path / "no-such-token"
    assert cli.main(["conformance", "--server", "http://127.0.0.1:9/fhir", "--token-file", str(missing)]) == 7
    assert str(missing) in capsys.readouterr().err
    assert cli.main(["conformance", "--server", "http://127.0.0.1:9/fhir", "--case", "no-such-case"]) == 2
    assert "no scenario named no-such-case" in capsys.readouterr().err


def test_layout_values_match_hapi_library_evaluate(broken_server: tuple[str, Package], engine: Engine) -> None:
    """Verify that HAPI's Library/$evaluate (Java CQL engine) gives exactly our expected-results Parameters.

    On the module's own server: a Medication retrieve is not patient-scoped, so on the session's
    server other tests' Medications would show up. That server holds the package with the changed
    threshold; the comparison is of engines, and the reference engine evaluates the same package.
    """
    server_url, pkg = broken_server
    ensure_loaded(pkg, engine)
    cases = [c for c in read_cases(CASES_DIR) if c.name in SUBSET]
    bad = []
    with Client(server_url) as client:
        for case in cases:
            load_patient(client, case.bundle)
            for library in sorted(n for n in pkg.elm if n != "FHIRHelpers"):
                values = engine.evaluate(
                    pkg.key,
                    library,
                    [case.bundle],
                    case.at,
                    time_parameters(case.at),
                )
                ours = expected_results(values[case.patient], pkg.elm[library])
                body = {
                    "resourceType": "Parameters",
                    "parameter": [
                        {"name": "subject", "valueString": f"Patient/{case.patient}"},
                        {
                            "name": "parameters",
                            "resource": {
                                "resourceType": "Parameters",
                                "parameter": [{"name": "Evaluation Time", "valueDateTime": case.at}],
                            },
                        },
                    ],
                }
                theirs = client.post_json(f"Library/{library}/$evaluate", body)
                bad += [f"{library}/{case.name}: {d}" for d in diff_parameters(ours, theirs)]
    assert not bad, "\n".join(bad[:20])
