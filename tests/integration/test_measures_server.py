"""Verify that the indicator Measures give the same counts and scores locally and by HAPI's $evaluate-measure.

One fresh server (its database holds only what this module loads) gets the package and three populations, each
named by a Group: the scenarios in tests/cases as written (every one under --full, the covering subset in the
default tier), the measure fixtures (tests/data/measure-patients: the numerators the scenarios leave empty,
GL.SAFE.1's among them) and the committed Synthea sample with GL added (its first 12 patients in the default
tier). For each, every indicator's counts and score, overall and per non-empty stratum, must be equal between
`$evaluate-measure` (subject = the Group) and the local evaluation on the Java engine (what
`guideline measure --population` runs), and the fixtures must give the counts worked out by hand.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from guideline.content.cql import Engine
from guideline.content.package import Package, build_package
from guideline.core.config import Config
from guideline.evaluation import measures as m
from guideline.evaluation.jvm import JavaPool
from guideline.evaluation.records import PatientRecord, open_population
from guideline.remote.http import Client, Timeouts
from guideline.remote.measure import evaluate_on_server
from guideline.remote.patients import load_patient
from guideline.remote.publish import publish_resources
from tests.support import CASES_DIR, TESTS
from tests.support.casedata import read_case
from tests.support.tiers import covering_cases, is_full

pytestmark = pytest.mark.server

PERIOD = m.Period(dt.date(2026, 1, 1), dt.date(2026, 12, 31))
FIXTURES = TESTS / "data" / "measure-patients"
SYNTHEA = TESTS / "data" / "synthea-sample"
DEFAULT_SYNTHEA = 12
# The fixtures' counts, worked out by hand from each file's description: (initial population, denominator,
# numerator) per indicator.
FIXTURE_COUNTS = {
    "GLInd1InsulinAssessed": (6, 6, 2),
    "GLInd2Referrals": (6, 6, 2),
    "GLInd3Diet": (6, 6, 2),
    "GLInd4Bromocriptine": (2, 2, 2),
    "GLSafe1UnsafeProposals": (7, 4, 3),
}


def _case_bundles() -> list[dict[str, Any]]:
    """Every scenario under --full; the covering subset in the default tier (HAPI evaluates ~1 patient/s here)."""
    cases = sorted(p for p in CASES_DIR.iterdir() if (p / "patient.json").is_file()) if is_full() else covering_cases()
    return [read_case(c)[1] for c in cases]


def _file_bundles(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))]


def _without_dangling_references(bundle: dict[str, Any]) -> dict[str, Any]:
    """The bundle with references to resources it does not hold cut to their display.

    The committed sample is trimmed to what the logic reads, so its Conditions and orders still point at
    Encounters and Practitioners left out; HAPI refuses such a write (HAPI-1094, referential integrity).
    No retrieve follows those references; both paths evaluate the same cut bundle.
    """
    held = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"]}

    def cut(node: Any) -> Any:
        if isinstance(node, list):
            return [cut(v) for v in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("reference")
        if isinstance(ref, str) and "/" in ref and not ref.startswith("#") and ref not in held:
            return {"display": node.get("display") or f"{ref} (not in the sample)"}
        return {k: cut(v) for k, v in node.items()}

    out: dict[str, Any] = cut(bundle)
    return out


def _synthea_bundles() -> list[dict[str, Any]]:
    """The Synthea sample's patients: all under --full, the first DEFAULT_SYNTHEA in the default tier (HAPI takes
    minutes for the 47, as each patient's retrieves are searches on the server)."""
    with open_population(SYNTHEA) as pop:
        records = [r for r in pop.records() if r.error is None]
    records = records if is_full() else records[:DEFAULT_SYNTHEA]
    return [_without_dangling_references(json.loads(r.bundle_json or "{}")) for r in records]


def _patient_id(bundle: dict[str, Any]) -> str:
    return next(str(e["resource"]["id"]) for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")


@pytest.fixture(scope="module")
def populations() -> dict[str, list[dict[str, Any]]]:
    """The three populations, by the Group id that names each on the server."""
    return {
        "measure-cases": _case_bundles(),
        "measure-fixtures": _file_bundles(FIXTURES),
        "measure-synthea": _synthea_bundles(),
    }


@pytest.fixture(scope="module")
def loaded(
    fresh_server: str, config: Config, engine: Engine, populations: dict[str, list[dict[str, Any]]]
) -> Iterator[tuple[str, Package]]:
    """The fresh server with the package published and every population loaded, one Group each."""
    pkg = build_package(config, engine)
    with Client(fresh_server) as client:
        publish_resources(client, pkg.resources)
        for group, bundles in populations.items():
            for b in bundles:
                load_patient(client, b)
            members = [{"entity": {"reference": f"Patient/{_patient_id(b)}"}} for b in bundles]
            body = {"resourceType": "Group", "id": group, "type": "person", "actual": True, "member": members}
            client.request("PUT", f"Group/{group}", json_body=body)
    yield fresh_server, pkg


def _local(pkg: Package, config: Config, bundles: list[dict[str, Any]]) -> dict[str, Any]:
    records = [PatientRecord(i, _patient_id(b), _patient_id(b), json.dumps(b)) for i, b in enumerate(bundles)]
    defs = m.measure_defs(pkg)
    with JavaPool(config, 2) as pool:
        rows = list(m.evaluate_records(pkg, records, PERIOD, pool))
    assert all(values is not None for _, values, _ in rows), [e for _, v, e in rows if v is None]
    tallies = m.tally(defs, [(str(r.patient), v or {}) for r, v, _ in rows])
    return {t.measure.id: m.comparable(t) for t in tallies}


@pytest.mark.parametrize("group", ["measure-cases", "measure-fixtures", "measure-synthea"])
def test_both_paths_give_the_same_counts_and_scores(
    loaded: tuple[str, Package], config: Config, populations: dict[str, list[dict[str, Any]]], group: str
) -> None:
    """Verify that $evaluate-measure and the local Java evaluation agree for every indicator and stratum."""
    url, pkg = loaded
    local = _local(pkg, config, populations[group])
    # One $evaluate-measure covers the whole Group: minutes for the Synthea sample on a busy 2-core machine.
    with Client(url, timeouts=Timeouts(read_s=900)) as client:
        server = {
            t.measure.id: m.comparable(t)
            for t, _ in evaluate_on_server(client, m.measure_defs(pkg), PERIOD, f"Group/{group}")
        }
    assert set(server) == set(local)
    for mid in sorted(local):
        assert server[mid] == local[mid], f"{group}: {mid} differs\n  server: {server[mid]}\n  local:  {local[mid]}"
    if group == "measure-fixtures":
        got = {mid: tuple(local[mid]["overall"][c] for c in m.PROPORTION_POPULATIONS) for mid in local}
        assert got == FIXTURE_COUNTS
