"""Verify every test case on the real server: $apply and CDS Hooks agree with local evaluation and expected."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from guideline.content.cql import Engine
from guideline.content.package import Package
from guideline.core.config import Config
from guideline.core.evaltime import now_utc
from guideline.evaluation.jvm import JavaEngine
from guideline.evaluation.patient import recommend
from guideline.evaluation.population import Evaluator
from guideline.evaluation.records import PatientRecord
from guideline.remote.apply import apply_patient
from guideline.remote.cds import call
from guideline.remote.http import Client
from guideline.remote.patients import load_patient
from guideline.remote.publish import publish_resources
from tests.support import CASES_DIR
from tests.support.casedata import on_rolled_case, read_case
from tests.support.cdscards import Knowledge, check_card
from tests.support.tiers import covering_cases, is_full, server_cases

pytestmark = pytest.mark.server

AGREEMENT: list[tuple[str, ...]] = []  # printed by conftest at the end of the run
PATHWAY_SERVICE = "gl-treatment"


def _codes(doc: dict[str, Any]) -> dict[str, list[str]]:
    return {r["id"]: sorted({c for a in r["activities"] for c in a["codes"]}) for r in doc["recommendations"]}


@pytest.fixture(scope="module")
def jvm(published: dict[str, Any], config: Config) -> Iterator[JavaEngine]:
    """The JVM batch evaluator (population mode's default engine) holding the published package."""
    java = JavaEngine(published["pkg"], config, 1)
    yield java
    java.close()


def _batch_document(pkg: Package, jvm: JavaEngine, bundle: dict[str, Any], pid: str, at: str) -> dict[str, Any]:
    """The document population mode writes for this patient with `--engine java`."""
    [result] = Evaluator(pkg, at).evaluate(jvm, [PatientRecord(0, pid, pid, json.dumps(bundle))])
    assert result.document is not None, result.error
    return result.document


def _pathway_fired(client: Client, published: dict[str, Any], pid: str) -> set[str]:
    """The recommendations the pathway service's cards come from on channel (f), each card's shape checked."""
    knowledge = Knowledge(published["pkg"].resources)
    return {check_card(card, pid, knowledge) for card in call(client, PATHWAY_SERVICE, patient=pid)["cards"]}


@pytest.mark.db_smoke
@pytest.mark.parametrize("case", server_cases(), ids=lambda c: c.name)
def test_case_agrees_across_engines(
    case: Path, published: dict[str, Any], server_url: str, engine: Engine, jvm: JavaEngine
) -> None:
    """Verify that $apply, the pathway CDS service, local recommend (Node and JVM) and expected.json agree.

    One CDS call a scenario: the pathway service on channel (f). The per-recommendation services and the EHR
    channels (a)-(e) are test_cds_channels', which calls them on the covering subset (every scenario under --full).
    """
    pkg: Package = published["pkg"]
    expected, bundle, pid = read_case(case)

    def on_server(rolled: dict[str, Any], _at: str) -> tuple[dict[str, list[str]], set[str]]:
        with Client(server_url) as client:
            load_patient(client, rolled)
            server = _codes(apply_patient(client, "", pid, published["plans"]))
            fired = _pathway_fired(client, published, pid)
        return server, fired

    (server, cds_fired), rolled, at = on_rolled_case(expected["at"], bundle, on_server)
    want = {k: sorted(v) for k, v in expected["recommendations"].items()}
    # The data as written (not rolled), evaluated as of the case's pinned time through the CQL parameter: what
    # `guideline apply --at` does. On the covering subset in the default tier, every scenario under --full.
    pinned = want
    if case in covering_cases() or is_full():
        with Client(server_url) as client:
            load_patient(client, bundle)
            pinned = _codes(apply_patient(client, "", pid, published["plans"], at=expected["at"]))
    local = _codes(recommend(pkg, rolled, at, engine))
    batch = _codes(_batch_document(pkg, jvm, rolled, pid, at))
    # CDS sends a card for each recommendation that fires, informational ones (R6) only when the server offers them
    # (project safety rule 17; cdscards decides which).
    cards = set(Knowledge(pkg.resources).card_plans(want))
    ok = server == local == batch == want == pinned and cds_fired == cards
    AGREEMENT.append(
        (
            case.name,
            "ok" if local == want else "DIFF",
            "ok" if batch == want else "DIFF",
            "ok" if server == want else "DIFF",
            ("ok" if pinned == want else "DIFF") if pinned is not want else "-",
            "ok" if cds_fired == cards else "DIFF",
            "agree" if ok else "DISAGREE",
        )
    )
    assert ok, json.dumps(
        {
            "expected": want,
            "local": local,
            "local, JVM batch": batch,
            "server $apply": server,
            "server $apply --at": pinned,
            "pathway cds cards from": sorted(cds_fired),
        },
        indent=1,
    )


def _case_bundle(name: str) -> tuple[dict[str, Any], str]:
    _, bundle, pid = read_case(CASES_DIR / name)
    return bundle, pid


def test_apply_at_pins_the_evaluation_time(published: dict[str, Any], server_url: str, engine: Engine) -> None:
    """Verify that $apply as of a pinned time follows that time, not the server's clock."""
    # Fasting insulin resulted exactly 12 months before 2026-06-01: inside the lookback then, not now.
    bundle, pid = _case_bundle("r1-insulin-at-lookback-start")
    at = "2026-06-01T12:00:00Z"
    with Client(server_url) as client:
        load_patient(client, bundle)
        pinned = _codes(apply_patient(client, "", pid, published["plans"], at=at))
        clock = _codes(apply_patient(client, "", pid, published["plans"]))
    assert pinned == _codes(recommend(published["pkg"], bundle, at, engine))
    assert "GLR1InsulinAssessment" not in pinned
    # Months later on the server's clock the result is too old, so R1 fires: the parameter, not
    # the clock, decided the pinned answer.
    assert "GLR1InsulinAssessment" in clock
    assert clock == _codes(recommend(published["pkg"], bundle, now_utc(), engine))


def test_apply_at_counts_days_in_the_offset_given(published: dict[str, Any], server_url: str, engine: Engine) -> None:
    """Verify that one instant with two UTC offsets gives each offset's date on both engines (age at midnight)."""
    bundle, pid = _case_bundle("r5-day-before-18th-birthday")  # 18th birthday on 2026-06-02
    paediatrician = "http://snomed.info/sct|183517000"
    results = {}
    with Client(server_url) as client:
        load_patient(client, bundle)
        for at in ("2026-06-01T23:59:00Z", "2026-06-02T01:59:00+02:00"):
            server = _codes(apply_patient(client, "", pid, published["plans"], at=at))
            assert server == _codes(recommend(published["pkg"], bundle, at, engine)), at
            results[at] = paediatrician in server["GLR5CareTeam"]
    assert results == {"2026-06-01T23:59:00Z": True, "2026-06-02T01:59:00+02:00": False}


def test_apply_cli_at(
    published: dict[str, Any], server_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    """Verify `guideline apply --at --json` prints the recommend shape as of the time given, and its text form."""
    from guideline.cli import main as cli

    bundle, pid = _case_bundle("r1-insulin-at-lookback-start")
    at = "2026-06-01T12:00:00Z"
    with Client(server_url) as client:
        load_patient(client, bundle)
    assert cli.main(["apply", "--server", server_url, "--patient", pid, "--at", "2026-06-01T12:00Z", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["evaluatedAt"] == at
    assert doc == recommend(published["pkg"], bundle, at, engine)
    assert cli.main(["apply", "--server", server_url, "--patient", pid, "--at", "2026-06-01"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Patient {pid} on {server_url} (as of 2026-06-01T00:00:00Z): ")


def test_apply_cli_at_without_offset_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that --at without a UTC offset exits 2 before contacting any server, saying how to fix it."""
    from guideline.cli import main as cli

    assert cli.main(["apply", "--server", "http://127.0.0.1:9/fhir", "--patient", "p", "--at", "2026-06-01T12:00"]) == 2
    assert "has no UTC offset; add one" in capsys.readouterr().err


@pytest.mark.db_smoke
def test_republish_is_a_no_op(published: dict[str, Any], server_url: str) -> None:
    """Verify that publishing the same package again writes nothing and adds no history versions."""
    pkg: Package = published["pkg"]
    with Client(server_url) as client:
        before = {
            r["id"]: client.get_json(f"{r['resourceType']}/{r['id']}")["meta"]["versionId"] for r in pkg.resources
        }
        result = publish_resources(client, pkg.resources)
        after = {r["id"]: client.get_json(f"{r['resourceType']}/{r['id']}")["meta"]["versionId"] for r in pkg.resources}
    assert result.writes == 0
    assert set(result.counts()) == {"unchanged"}, result.counts()
    assert before == after


def test_republish_follows_search_pages(
    published: dict[str, Any], server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verify that the url|version lookup reads every page: with 2 results a page, a re-publish still finds all."""
    import guideline.remote.publish as publish

    monkeypatch.setattr(publish, "_LOOKUP_COUNT", 2)
    pkg: Package = published["pkg"]
    with Client(server_url) as client:
        result = publish_resources(client, pkg.resources, dry_run=True)
    assert result.counts() == {"unchanged": len(pkg.resources)}
    assert result.requests > 3  # metadata, one batch, and next-page reads


def test_changed_content_same_version_is_refused_then_forced(published: dict[str, Any], server_url: str) -> None:
    """Verify that changed content under a released version is refused (server untouched) and --force writes it."""
    from guideline.core.errors import VersionConflictError

    pkg: Package = published["pkg"]
    target = next(r for r in pkg.resources if r["resourceType"] == "ActivityDefinition")
    changed = json.loads(json.dumps(target))
    changed["description"] = f"{target.get('description', '')} (edited {uuid.uuid4().hex[:6]})"
    with Client(server_url) as client:
        before = client.get_json(f"ActivityDefinition/{target['id']}")
        with pytest.raises(VersionConflictError) as err:
            publish_resources(client, [changed])
        assert f"ActivityDefinition/{target['id']}" in "\n".join(err.value.details)
        assert client.get_json(f"ActivityDefinition/{target['id']}")["meta"] == before["meta"]
        forced = publish_resources(client, [changed], force=True)
        assert forced.writes == 1 and forced.counts() == {"forced": 1}
        assert client.get_json(f"ActivityDefinition/{target['id']}")["description"] == changed["description"]
        # Put the released content back so other tests see the package as built.
        publish_resources(client, [target], force=True)
