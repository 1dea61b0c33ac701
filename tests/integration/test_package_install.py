"""Verify that the server installs package.tgz with HAPI's package installer and then serves $apply as after publish."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from guideline.content.cql import Engine
from guideline.content.outputs import build
from guideline.core.config import Config
from guideline.remote.apply import apply_patient, recommendation_plans
from guideline.remote.http import Client
from guideline.remote.patients import load_patient
from guideline.remote.publish import same_content
from tests.support.casedata import CASES

pytestmark = pytest.mark.server

# A few scenarios that between them fire and do not fire recommendations (the full set runs after publish).
SAMPLE = [c for c in CASES if c.name in ("r5-child", "no-gl-metabolic", "r2-galactorrhoea")] or CASES[:3]


def _strip(resource: dict[str, Any]) -> dict[str, Any]:
    # HAPI's installer finds artifacts by canonical url and gives new ones server-assigned ids.
    return {k: v for k, v in resource.items() if k != "id"}


def test_cds_on_an_empty_server_is_404_not_500(fresh_server: str) -> None:
    """Verify that a CDS call or feedback before any knowledge is installed is a 404 naming the service.

    HAPI's service registry throws a NullPointerException while no service is registered; that used to be a 500.
    This test must run before `installed` fills the module's server: it is first in the file on purpose.
    """
    root = fresh_server.removesuffix("/fhir")
    body = {"hook": "patient-view", "hookInstance": "x", "context": {"patientId": "p", "userId": "Practitioner/1"}}
    for path in ("gl-treatment", "GLR1InsulinAssessment", "gl-treatment/feedback"):
        resp = requests.post(f"{root}/cds-services/{path}", json=body, timeout=60)
        assert resp.status_code == 404, (path, resp.status_code, resp.text)
        assert "No CDS service" in resp.json()["error"], resp.text


@pytest.fixture(scope="module")
def installed(
    fresh_server: str, config: Config, engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """Build the project's package and POST it to an empty server's /packages (HAPI's package installer).

    An empty server of its own: the installer looks resources up by canonical url, so on the session's
    server (where the package is already published) it would install nothing.
    """
    result = build(tmp_path_factory.mktemp("dist") / "dist", cfg=config, engine=engine)
    tgz = (result.out_dir / "package.tgz").read_bytes()
    root = fresh_server.removesuffix("/fhir")
    resp = requests.post(f"{root}/packages", data=tgz, headers={"Content-Type": "application/gzip"}, timeout=300)
    assert resp.status_code == 200, resp.text
    yield result.package, resp.json()


def test_installer_installs_every_resource_unchanged(installed: Any, fresh_server: str) -> None:
    """Verify that HAPI's installer took every resource of the package, content unchanged (id and meta aside)."""
    pkg, outcome = installed
    assert outcome["package"] == f"{pkg.config.package.id}#{pkg.config.package.version}"
    counts: dict[str, int] = {}
    for r in pkg.resources:
        counts[r["resourceType"]] = counts.get(r["resourceType"], 0) + 1
    # HAPI installs a package version once; a server kept across runs (--data) answers "already exists".
    # Its counts are per file it lists, and NpmPackage lists a Library with contained resources twice (the
    # second write is a no-op update), so the counts are at least ours; every resource is checked below.
    again = any("already exists" in m for m in outcome["messages"])
    if not again:
        assert set(outcome["installed"]) >= set(counts), outcome
        assert all(outcome["installed"][t] >= n for t, n in counts.items()), outcome
    with Client(fresh_server) as client:
        for r in pkg.resources:
            found = client.get_json(f"{r['resourceType']}", params={"url": r["url"], "version": r["version"]})
            [entry] = found["entry"]
            # Content as `guideline publish` compares it (meta ignored, narrative by meaning).
            assert same_content(_strip(r), _strip(entry["resource"])), f"{r['resourceType']}/{r['id']} differs"


@pytest.mark.parametrize("case", SAMPLE, ids=[c.name for c in SAMPLE])
def test_apply_after_install_matches_expected(case: Path, installed: Any, fresh_server: str, config: Config) -> None:
    """Verify that $apply on the installed artifacts gives each scenario's expected recommendations."""
    expected = json.loads((case / "expected.json").read_text(encoding="utf-8"))
    bundle = json.loads((case / "patient.json").read_text(encoding="utf-8"))
    pid = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    pathway_url = config.canonical_for("PlanDefinition", config.package.pathway)
    with Client(fresh_server) as client:
        found = client.get_json("PlanDefinition", params={"url": pathway_url, "version": config.package.version})
        [pathway] = [e["resource"] for e in found["entry"]]
        plans = recommendation_plans(client, pathway["id"])
        load_patient(client, bundle)
        result = apply_patient(client, "", pid, plans, at=expected["at"])
    name = {p["id"]: p["name"] for p in plans}  # installed plans have server-assigned ids
    got = {name[r["id"]]: sorted({c for a in r["activities"] for c in a["codes"]}) for r in result["recommendations"]}
    assert got == {k: sorted(v) for k, v in expected["recommendations"].items()}
