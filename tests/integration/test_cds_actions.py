"""Verify CDS cards an EHR can act on: our own $apply path, suggestions, feedback, accepting a suggestion on an EHR.

The EHR is the test EHR (a second, token-protected server). Feedback is read back through our server's FHIR API
(`guideline cds feedback`), which is where the server stores it.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from guideline.cli import main as cli
from guideline.content.cql import Engine
from guideline.evaluation.patient import recommend
from guideline.remote.cds import call, cds_base_for, feedback_counts
from guideline.remote.http import Client
from guideline.remote.patients import days_until, load_patient, roll_dates
from tests.integration.conftest import Ehr
from tests.support import CASES_DIR
from tests.support.cdscards import Knowledge, check_card, plan_of

pytestmark = pytest.mark.server

PATHWAY = "gl-treatment"
# R2 (a MedicationRequest: a prolactin result, project safety rule 11), R4 (three suggestions), R5; R6 (informational)
# fires, no CDS card by default (rule 17)
CASE = "r2-prolactin-female-above"


def _rolled(case: str) -> tuple[dict[str, Any], str, str]:
    """The case's bundle with dates moved to today, its Patient id and the evaluation time."""
    expected = json.loads((CASES_DIR / case / "expected.json").read_text(encoding="utf-8"))
    bundle = json.loads((CASES_DIR / case / "patient.json").read_text(encoding="utf-8"))
    days = days_until(expected["at"])
    pid = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    return roll_dates(bundle, days), pid, roll_dates({"at": expected["at"]}, days)["at"]


def _deceased(bundle: dict[str, Any]) -> dict[str, Any]:
    """The same chart (same ids) with the Patient deceased: other data, for which no recommendation applies."""
    out = copy.deepcopy(bundle)
    for e in out["entry"]:
        if e["resource"]["resourceType"] == "Patient":
            e["resource"]["deceasedBoolean"] = True
    return out


@pytest.fixture(scope="module")
def answered(published: dict[str, Any], server_url: str, ehr: Ehr, engine: Engine) -> dict[str, Any]:
    """The pathway service's answer for CASE by prefetch only, while our server holds another chart of that id."""
    rolled, pid, at = _rolled(CASE)
    with Client(server_url) as client, Client(ehr.url, token=ehr.token) as data:
        load_patient(data, rolled)  # the EHR's chart: the real data, same ids
        load_patient(client, _deceased(rolled))  # ours: same ids, different data
        resp = call(
            client, PATHWAY, patient=pid, channel="prefetch", data=data, templates=published["templates"][PATHWAY]
        )
        ours = call(client, PATHWAY, patient=pid)  # channel (f): our copy, deceased
    local = [r["id"] for r in recommend(published["pkg"], rolled, at, engine)["recommendations"]]
    return {"resp": resp, "ours": ours, "pid": pid, "local": local}


def test_prefetch_only_ignores_our_copy_of_the_same_patient(
    answered: dict[str, Any], published: dict[str, Any]
) -> None:
    """Verify that prefetch-only cards are the local engine's, though our server stores that patient id differently.

    Before our own $apply path, CR evaluated prefetch plus stored data and the GLR2 card went missing.
    """
    knowledge = Knowledge(published["pkg"].resources)
    plans = [check_card(c, answered["pid"], knowledge) for c in answered["resp"]["cards"]]
    assert plans == knowledge.card_plans(answered["local"]), (plans, answered["local"])
    assert "GLR2Bromocriptine" in plans
    assert answered["ours"]["cards"] == []  # our copy (deceased) really is different data


def test_cards_are_ordered_by_the_pathway_and_drafts_coded_as_their_activity(
    answered: dict[str, Any], published: dict[str, Any]
) -> None:
    """Verify the cards' order (GLPathway's actions) and that each draft is coded exactly as its ActivityDefinition."""
    knowledge = Knowledge(published["pkg"].resources)
    pathway = [a["definitionCanonical"].rsplit("/", 1)[-1].split("|")[0] for a in _pathway_steps(knowledge)]
    plans = [check_card(c, answered["pid"], knowledge) for c in answered["resp"]["cards"]]
    assert plans == [p for p in pathway if p in plans]
    r4 = next(c for c in answered["resp"]["cards"] if c["source"]["url"].endswith("rec-GLR4Diet.html"))
    # The diet, the dietitian referral (project safety rule 10) and the patient message.
    assert len(r4["suggestions"]) == 3 and r4["selectionBehavior"] == "any"
    # R6 fires locally but, proposing nothing, is not sent as a CDS card by default (project safety rule 17).
    assert "GLR6Prognosis" in answered["local"]
    assert "GLR6Prognosis" not in plans


def _pathway_steps(knowledge: Knowledge) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []

    def walk(actions: list[dict[str, Any]]) -> None:
        for a in actions:
            if "/PlanDefinition/" in str(a.get("definitionCanonical", "")):
                steps.append(a)
            walk(a.get("action") or [])

    walk(knowledge.plans["GLPathway"]["action"])
    return steps


def _feedback(server_url: str, body: Any, service: str = PATHWAY) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, str) else json.dumps(body)
    resp = requests.post(
        f"{cds_base_for(server_url)}/{service}/feedback",
        data=data,
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    return resp.status_code, resp.json()


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def _with_suggestions(answered: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in answered["resp"]["cards"] if c.get("suggestions")]


def test_feedback_accepted_and_overridden_are_stored_and_counted(answered: dict[str, Any], server_url: str) -> None:
    """Verify accepted (with its suggestion) and overridden (with a reason) feedback: 200, then counted."""
    first, second = _with_suggestions(answered)[:2]
    with Client(server_url) as client:
        before = feedback_counts(client).get(PATHWAY, {"accepted": 0, "overridden": 0, "reasons": {}})
    reason = first["overrideReasons"][1]
    body = {
        "feedback": [
            {
                "card": first["uuid"],
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": first["suggestions"][0]["uuid"]}],
                "outcomeTimestamp": _now(),
            },
            {
                "card": second["uuid"],
                "outcome": "overridden",
                "overrideReason": {"reason": reason, "userComment": "discussed today"},
                "outcomeTimestamp": _now(),
            },
        ]
    }
    status, answer = _feedback(server_url, body)
    assert status == 200, answer
    with Client(server_url) as client:
        after = feedback_counts(client)[PATHWAY]
    assert after["accepted"] == before["accepted"] + 1
    assert after["overridden"] == before["overridden"] + 1
    assert after["reasons"][reason["code"]] == before["reasons"].get(reason["code"], 0) + 1


def test_feedback_with_a_suggestion_not_sent_on_that_card_is_400(answered: dict[str, Any], server_url: str) -> None:
    """Verify that an acceptedSuggestions id that is not a suggestion uuid sent on that card is refused (400)."""
    first, second = _with_suggestions(answered)[:2]
    for wrong in (str(uuid.uuid4()), second["suggestions"][0]["uuid"]):  # never sent; sent, but on another card
        item = {"card": first["uuid"], "outcome": "accepted", "acceptedSuggestions": [{"id": wrong}]}
        status, answer = _feedback(server_url, {"feedback": [{**item, "outcomeTimestamp": _now()}]})
        assert status == 400 and wrong in answer["error"], answer


def test_feedback_on_a_card_never_sent_is_404(answered: dict[str, Any], server_url: str) -> None:
    """Verify that feedback on a card uuid this service never sent is refused (404), and nothing is stored."""
    card = answered["resp"]["cards"][0]
    with Client(server_url) as client:
        before = feedback_counts(client)
    unknown = {"card": str(uuid.uuid4()), "outcome": "overridden", "outcomeTimestamp": _now()}
    known = {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": _now()}
    status, answer = _feedback(server_url, {"feedback": [known, unknown]})
    assert status == 404 and unknown["card"] in answer["error"], answer
    # The card exists, but another service sent it.
    status, answer = _feedback(server_url, {"feedback": [known]}, service="GLR1InsulinAssessment")
    assert status == 404, answer
    with Client(server_url) as client:
        assert feedback_counts(client) == before  # all or nothing: the known card's item was not stored either


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("{not json", "not valid JSON"),
        ({}, "feedback"),
        ({"feedback": []}, "feedback"),
        ({"feedback": ["x"]}, "feedback[0] must be an object"),
        ({"feedback": [{"outcome": "accepted", "outcomeTimestamp": "2026-01-01T00:00:00Z"}]}, "feedback[0].card"),
        ({"feedback": [{"card": "nope", "outcome": "accepted", "outcomeTimestamp": "2026"}]}, "not a card uuid"),
        ({"feedback": [{"card": "CARD", "outcome": "ignored", "outcomeTimestamp": "2026"}]}, "accepted or overridden"),
        ({"feedback": [{"card": "CARD", "outcome": "accepted"}]}, "outcomeTimestamp"),
        ({"feedback": [{"card": "CARD", "outcome": "accepted", "outcomeTimestamp": "yesterday"}]}, "ISO 8601"),
        (
            {
                "feedback": [
                    {
                        "card": "CARD",
                        "outcome": "overridden",
                        "overrideReason": {"reason": {"system": "http://x", "code": "bored"}},
                        "outcomeTimestamp": "2026-01-01T00:00:00Z",
                    }
                ]
            },
            "not one of the card's overrideReasons",
        ),
    ],
    ids=[
        "not-json",
        "no-feedback",
        "empty",
        "item-not-object",
        "no-card",
        "bad-uuid",
        "bad-outcome",
        "no-time",
        "bad-time",
        "unknown-reason",
    ],
)
def test_malformed_feedback_is_400(answered: dict[str, Any], server_url: str, body: Any, says: str) -> None:
    """Verify that a malformed feedback body is refused with 400 and a message naming the problem."""
    card = _with_suggestions(answered)[0]["uuid"]
    body = json.loads(json.dumps(body).replace("CARD", card)) if not isinstance(body, str) else body
    status, answer = _feedback(server_url, body)
    assert status == 400, answer
    assert says in answer["error"], answer


def test_feedback_to_an_unknown_service_is_404(server_url: str) -> None:
    """Verify that feedback for a service id nobody registered is a 404."""
    status, answer = _feedback(server_url, {"feedback": []}, service="no-such-service")
    assert status == 404 and "no-such-service" in answer["error"]


def test_accepting_a_suggestion_creates_the_draft_on_the_ehr(
    published: dict[str, Any], server_url: str, ehr: Ehr, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Verify `cds call` + `cds accept` as an EHR: the draft is on the EHR afterwards and feedback counts show it."""
    pid, ehr_args = _own_chart_on_ehr(CASE, ehr, tmp_path)
    assert (
        cli.main(["cds", "call", "--server", server_url, "--patient", pid, "--channel", "fhir", *ehr_args, "--json"])
        == 0
    )
    saved = tmp_path / "cards.json"
    saved.write_text(capsys.readouterr().out, encoding="utf-8")
    responses = json.loads(saved.read_text(encoding="utf-8"))
    assert list(responses) == [PATHWAY]  # without --service: only the pathway service, each card once
    card = next(c for c in responses[PATHWAY]["cards"] if c["source"]["url"].endswith("rec-GLR2Bromocriptine.html"))
    suggestion = card["suggestions"][0]
    with Client(server_url) as client:
        before = feedback_counts(client).get(PATHWAY, {}).get("accepted", 0)
    argv = ["cds", "accept", "--server", server_url, "--response", str(saved), "--suggestion", suggestion["uuid"]]
    assert cli.main([*argv, *ehr_args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    (created,) = result["created"]
    assert created.startswith("MedicationRequest/")
    with Client(ehr.url, token=ehr.token) as data:
        stored = data.get_json(created)
    assert stored["status"] == "draft" and stored["intent"] == "proposal"
    assert stored["subject"]["reference"] == f"Patient/{pid}"
    want = suggestion["actions"][0]["resource"]["medicationCodeableConcept"]
    assert stored["medicationCodeableConcept"] == want
    with Client(server_url) as client:
        assert feedback_counts(client)[PATHWAY]["accepted"] == before + 1
    # A suggestion uuid the saved response does not hold is a usage error.
    assert cli.main([*argv[:-1], str(uuid.uuid4()), *ehr_args]) == 2


def _own_chart_on_ehr(case: str, ehr: Ehr, tmp_path: Path) -> tuple[str, list[str]]:
    """The case rolled to today and loaded on the EHR under a patient id of its own: (that id, the `cds` CLI's
    EHR arguments, with the token in a file under tmp_path).

    For a test that leaves an accepted draft on the EHR: the test EHR lives for the whole scripts/test run (both
    database passes), and a draft left on the case's own chart would withhold that card from every later test
    reading the chart (project safety rule 15).
    """
    rolled, base, _ = _rolled(case)
    pid = f"{base}-{uuid.uuid4().hex[:8]}"
    token = tmp_path / "token"
    token.write_text(ehr.token + "\n", encoding="utf-8")
    with Client(ehr.url, token=ehr.token) as data:
        load_patient(data, json.loads(json.dumps(rolled).replace(base, pid)))
    return pid, ["--ehr", ehr.url, "--ehr-token-file", str(token)]


def _call_pathway(server_url: str, pid: str, ehr_args: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """The pathway service's answer for the patient on the EHR (`guideline cds call --channel fhir`)."""
    argv = ["cds", "call", "--server", server_url, "--patient", pid, "--channel", "fhir", *ehr_args, "--json"]
    assert cli.main(argv) == 0
    responses: dict[str, Any] = json.loads(capsys.readouterr().out)
    return responses


def test_an_accepted_suggestion_is_not_proposed_again(
    published: dict[str, Any], server_url: str, ehr: Ehr, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Verify project safety rule 15 end to end: once `cds accept` has put the draft order on the EHR, the next
    patient-view call for that patient no longer proposes it, and the other cards stay.
    """
    pid, ehr_args = _own_chart_on_ehr(CASE, ehr, tmp_path)
    first = _call_pathway(server_url, pid, ehr_args, capsys)
    saved = tmp_path / "cards.json"
    saved.write_text(json.dumps(first), encoding="utf-8")
    before = [plan_of(c) for c in first[PATHWAY]["cards"]]
    assert "GLR2Bromocriptine" in before and "GLR5CareTeam" in before
    card = next(c for c in first[PATHWAY]["cards"] if plan_of(c) == "GLR2Bromocriptine")
    argv = ["cds", "accept", "--server", server_url, "--response", str(saved)]
    assert cli.main([*argv, "--suggestion", card["suggestions"][0]["uuid"], *ehr_args, "--json"]) == 0
    (created,) = json.loads(capsys.readouterr().out)["created"]
    with Client(ehr.url, token=ehr.token) as data:
        assert data.get_json(created)["status"] == "draft"
    after = [plan_of(c) for c in _call_pathway(server_url, pid, ehr_args, capsys)[PATHWAY]["cards"]]
    assert after == [p for p in before if p != "GLR2Bromocriptine"], (before, after)
