"""Verify CDS Hooks as a real EHR calls it: every data channel gives the local engine's answer, failures are loud.

The test EHR is a second server (scripts/server start --ehr) that answers 401 without its bearer token. Its copy
of each scenario's patient has ids prefixed "ehr-", so nothing of it is stored on the CDS server (as with a real EHR).
The channels read it through the strict proxy (tests/support/strictehr.py): only CDS Hooks 2.0's prefetch subset
(400 otherwise, e.g. for _include), small pages, OperationOutcome entries in every searchset.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests

from guideline.content.cql import Engine
from guideline.evaluation.patient import recommend
from guideline.remote.cds import (
    CHANNELS,
    DEFAULT_USER,
    MEDICATION_USES,
    call,
    cds_base_for,
    referenced_medications,
    resolve_prefetch,
)
from guideline.remote.http import Client
from guideline.remote.patients import load_patient
from guideline.remote.publish import publish_resources
from tests.integration.conftest import Ehr, StrictEhr
from tests.support import CASES_DIR, ROOT, TESTS
from tests.support.casedata import on_rolled_case, read_case
from tests.support.cdscards import INFORMATIONAL_CARDS, Knowledge, check_card
from tests.support.netutil import free_port
from tests.support.strictehr import subset_violations
from tests.support.tiers import is_full, tier_cases

SUPPORT = TESTS / "support"

# The channels on which the $apply server's pathway responses are compared with the core's, besides (f): all under
# --full; in the default tier (a) prefetch and (b) fhirServer, the two an EHR uses (the core's (c)-(e) are still
# checked against local there, and every per-recommendation service against $apply).
APPLY_CHANNELS = CHANNELS[1:] if is_full() else ("prefetch", "fhir")

pytestmark = pytest.mark.server

CHANNEL_AGREEMENT: list[tuple[str, dict[str, str]]] = []  # printed by conftest at the end of the run
EHR_PREFIX = "ehr-"
FHIR_ID_MAX = 64  # FHIR R4 ids are at most 64 characters


def prefixed_id(rid: str, prefix: str = EHR_PREFIX) -> str:
    """`rid` under `prefix` (another chart's id); a digest when the prefixed id would pass FHIR's 64 characters."""
    prefixed = prefix + rid
    if len(prefixed) <= FHIR_ID_MAX:
        return prefixed
    return prefix + hashlib.sha256(rid.encode()).hexdigest()[:32]


def with_prefix(node: Any, prefix: str = EHR_PREFIX) -> Any:
    """The bundle with every resource id and every relative reference's id prefixed (a different chart's ids)."""
    if isinstance(node, list):
        return [with_prefix(v, prefix) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: with_prefix(v, prefix) for k, v in node.items()}
    if isinstance(node.get("resourceType"), str) and isinstance(node.get("id"), str):
        out["id"] = prefixed_id(node["id"], prefix)
    ref = node.get("reference")
    if isinstance(ref, str) and ref.count("/") == 1 and not ref.startswith("#"):
        kind, rid = ref.split("/")
        out["reference"] = f"{kind}/{prefixed_id(rid, prefix)}"
    elif isinstance(ref, str) and ref.startswith("#") and len(ref) > 1:  # a contained resource, whose id moved too
        out["reference"] = "#" + prefixed_id(ref[1:], prefix)
    return out


PATHWAY_SERVICE = "gl-treatment"


def _cards(resp: dict[str, Any], pid: str, knowledge: Knowledge) -> list[str]:
    """Card summaries, after checking every card's CDS Hooks 2.0 shape (uuids, summary, source, suggestions...)."""
    uuids = [uuid.UUID(c["uuid"]) for c in resp["cards"]]
    uuids += [uuid.UUID(s["uuid"]) for c in resp["cards"] for s in c.get("suggestions") or []]
    assert len(set(uuids)) == len(uuids), "card or suggestion uuids repeat"
    for card in resp["cards"]:
        check_card(card, pid, knowledge)
    return [c["summary"] for c in resp["cards"]]


def _per_service(client: Client, published: dict[str, Any], pid: str) -> dict[str, dict[str, Any]]:
    """Channel (f) on each recommendation service the server offers, in pathway order: the responses by service."""
    knowledge = Knowledge(published["pkg"].resources)
    # pathway order (R1 ... R6), the services the server offers (rule 17: not R6 by default)
    return {
        plan_id: call(client, plan_id, patient=pid)
        for plan_id in knowledge.card_plans(p["id"] for p in published["plans"])
    }


def _pathway_on_every_channel(
    client: Client,
    data: Client,
    token: str,
    published: dict[str, Any],
    pid: str,
    channels: tuple[str, ...] = CHANNELS[1:],
) -> dict[str, dict[str, Any]]:
    """The pathway service's responses on (f) and `channels`; the EHR's prefetch is read once for (a), (c)-(e)."""
    templates = published["templates"][PATHWAY_SERVICE]
    context = {"userId": DEFAULT_USER, "patientId": prefixed_id(pid)}
    resolved = resolve_prefetch(data, templates, context)
    out = {"server": call(client, PATHWAY_SERVICE, patient=pid)}
    for channel in channels:
        out[channel] = call(
            client,
            PATHWAY_SERVICE,
            patient=prefixed_id(pid),
            channel=channel,
            data=data,
            data_token=token,
            templates=templates,
            resolved=resolved,
        )
    return out


def comparable(resp: dict[str, Any]) -> Any:
    """A CDS response with what legitimately differs between two calls replaced: every `uuid` (CDS Hooks wants a
    fresh one per card and suggestion). Nothing else is normalised: texts, order, suggestions and every draft
    resource must be equal as sent."""

    def strip(node: Any) -> Any:
        if isinstance(node, list):
            return [strip(v) for v in node]
        if isinstance(node, dict):
            return {k: ("<uuid>" if k == "uuid" else strip(v)) for k, v in node.items()}
        return node

    return strip(resp)


@pytest.mark.parametrize("case", tier_cases(), ids=lambda c: c.name)
def test_every_channel_agrees_with_local(
    case: Path,
    published: dict[str, Any],
    apply_published: dict[str, Any],
    server_url: str,
    ehr: Ehr,
    strict: StrictEhr,
    engine: Engine,
) -> None:
    """Verify that the pathway service on channels (a)-(e) (strict test EHR) and (f) (our server) gives the local
    answer, and that every card equals the one the old $apply path gives.

    Reference: the per-recommendation services on channel (f) fire exactly for local recommend's recommendations,
    and their cards, in recommendation order, are what the pathway service answers on every channel. Every
    response of the evaluation core (the test server) equals, card for card and suggestion for suggestion, the
    response of a server evaluating with clinical reasoning's $apply (`guideline.cds.evaluator: apply`) on the same
    data and channel (default tier: (a), (b), (f) and every service, APPLY_CHANNELS; --full: every
    channel), uuids aside ({@link comparable}). The EHR channels read the test EHR through the strict
    proxy: CDS Hooks 2.0's prefetch subset only, paged searchsets with OperationOutcome entries; it must have
    refused nothing. The default tier runs the covering subset (tests/support/tiers.py); --full every scenario.
    """
    expected, bundle, pid = read_case(case)
    apply_url = apply_published["url"]
    refused_before = len(strict.log.refused)

    def on_servers(
        rolled: dict[str, Any], _at: str
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
        with (
            Client(server_url) as client,
            Client(apply_url) as old,
            Client(ehr.url, token=ehr.token) as loader,
            Client(strict.url, token=strict.token) as data,
        ):
            load_patient(client, rolled)
            load_patient(old, rolled)
            load_patient(loader, with_prefix(rolled))
            return (
                _per_service(client, published, pid),
                _pathway_on_every_channel(client, data, strict.token, published, pid),
                _per_service(old, apply_published, pid),
                _pathway_on_every_channel(old, data, strict.token, apply_published, pid, APPLY_CHANNELS),
            )

    (services, channels, old_services, old_channels), rolled, at = on_rolled_case(expected["at"], bundle, on_servers)
    assert strict.log.refused[refused_before:] == [], "the strict EHR refused reads outside the prefetch subset"
    knowledge = Knowledge(published["pkg"].resources)
    fired = {plan_id for plan_id, resp in services.items() if resp["cards"]}
    cards = [s for plan_id, resp in services.items() for s in _cards(resp, pid, knowledge)]
    results = {
        ch: _cards(resp, pid if ch == "server" else prefixed_id(pid), knowledge) for ch, resp in channels.items()
    }
    local = set(
        knowledge.card_plans(r["id"] for r in recommend(published["pkg"], rolled, at, engine)["recommendations"])
    )
    row = {ch: ("ok" if fired == local and got == cards else "DIFF") for ch, got in results.items()}
    # the evaluation core's cards against $apply's, per channel and per recommendation service
    differs = {ch for ch in old_channels if comparable(channels[ch]) != comparable(old_channels[ch])}
    differs |= {f"service {s}" for s in services if comparable(services[s]) != comparable(old_services.get(s, {}))}
    row["$apply"] = "ok" if not differs else "DIFF"
    CHANNEL_AGREEMENT.append((case.name, row))
    assert set(row.values()) == {"ok"}, json.dumps(
        {
            "local": sorted(local),
            "per-service (f)": sorted(fired),
            "cards (f)": cards,
            **results,
            "differs from $apply": sorted(differs),
            **{f"core {ch}": channels[ch] for ch in sorted(differs) if ch in channels},
            **{f"$apply {ch}": old_channels[ch] for ch in sorted(differs) if ch in channels},
        },
        indent=1,
    )


def _first_case() -> tuple[dict[str, Any], str]:
    bundle = json.loads((CASES_DIR / "r2-galactorrhoea" / "patient.json").read_text(encoding="utf-8"))
    pid = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    return with_prefix(bundle, "fail-"), prefixed_id(pid, "fail-")


def _post(server_url: str, service: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], float]:
    t0 = time.monotonic()
    resp = requests.post(f"{cds_base_for(server_url)}/{service}", json=body, timeout=60)
    return resp.status_code, resp.json(), time.monotonic() - t0


def _request(pid: str, **data: Any) -> dict[str, Any]:
    return {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"userId": "Practitioner/example", "patientId": pid},
        **data,
    }


@pytest.fixture(scope="module")
def failing_patient(ehr: Ehr) -> str:
    """A patient on the test EHR only, for the failure cases."""
    bundle, pid = _first_case()
    with Client(ehr.url, token=ehr.token) as data:
        load_patient(data, bundle)
    return pid


def test_no_prefetch_and_no_fhir_server_is_412(
    published: dict[str, Any], server_url: str, failing_patient: str
) -> None:
    """Verify that data neither prefetched nor reachable answers 412 with a message, not an empty card list."""
    service = published["plans"][0]["id"]
    status, body, _ = _post(server_url, service, _request(failing_patient))
    assert status == 412, body
    assert "no fhirServer" in body["error"]
    # A key sent as null (could not fetch) without a fhirServer to read it from: the same.
    templates = published["templates"][service]
    status, body, _ = _post(server_url, service, _request(failing_patient, prefetch=dict.fromkeys(templates)))
    assert status == 412, body


def test_prefetch_lacking_a_referenced_medication_is_412_naming_it(
    published: dict[str, Any], server_url: str, ehr: Ehr, strict: StrictEhr
) -> None:
    """Verify that prefetch only, without a Medication a MedicationRequest references, is a 412 naming both.

    The EHR resolves the templates (no _include) and sends no referenced Medication; the service must not guess.
    With the EHR's fhirServer added (channel both) it reads the Medication by id and answers 200.
    """
    bundle = json.loads((CASES_DIR / "r2-on-bromocriptine-by-reference" / "patient.json").read_text(encoding="utf-8"))
    bundle = with_prefix(bundle, "m412-")
    pid = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    templates = published["templates"][PATHWAY_SERVICE]
    with Client(ehr.url, token=ehr.token) as loader, Client(strict.url, token=strict.token) as data:
        load_patient(loader, bundle)
        prefetch = resolve_prefetch(
            data, templates, {"userId": DEFAULT_USER, "patientId": pid}, referenced_medications=False
        )
    missing = referenced_medications(prefetch)
    assert len(missing) == 1, missing
    (medication, referrer), *_ = missing.items()
    status, body, _ = _post(server_url, PATHWAY_SERVICE, _request(pid, prefetch=prefetch))
    assert status == 412, body
    assert f"{medication} referenced by {referrer}" in body["error"], body
    auth = {"access_token": strict.token, "token_type": "Bearer", "expires_in": 300, "scope": "x"}
    both = _request(pid, prefetch=prefetch, fhirServer=strict.url, fhirAuthorization=auth)
    status, body, _ = _post(server_url, PATHWAY_SERVICE, both)
    assert status == 200, body
    assert any(q == medication for q in strict.log.reads), "the Medication was not read by id from fhirServer"


@pytest.mark.parametrize("token", [None, "wrong-token"], ids=["no-token", "wrong-token"])
def test_ehr_refusing_the_token_is_an_error_naming_it(
    published: dict[str, Any], server_url: str, ehr: Ehr, failing_patient: str, token: str | None
) -> None:
    """Verify that the EHR answering 401 gives a 502 naming the server and status, never {"cards": []}."""
    service = published["plans"][0]["id"]
    data: dict[str, Any] = {"fhirServer": ehr.url}
    if token:
        data["fhirAuthorization"] = {"access_token": token, "token_type": "Bearer", "expires_in": 300, "scope": "x"}
    status, body, _ = _post(server_url, service, _request(failing_patient, **data))
    assert status == 502, body
    assert ehr.url in body["error"] and "401" in body["error"]
    assert "wrong-token" not in json.dumps(body)


def test_ehr_unknown_patient_is_412(published: dict[str, Any], server_url: str, ehr: Ehr) -> None:
    """Verify that a patient the EHR does not have is a 412 (cannot evaluate), not a silent empty answer."""
    auth = {"access_token": ehr.token, "token_type": "Bearer", "expires_in": 300, "scope": "x"}
    service = published["plans"][0]["id"]
    status, body, _ = _post(server_url, service, _request("nobody", fhirServer=ehr.url, fhirAuthorization=auth))
    assert status == 412, body
    assert ehr.token not in json.dumps(body)


def test_unreachable_ehr_is_502(published: dict[str, Any], server_url: str, failing_patient: str) -> None:
    """Verify that a fhirServer nothing listens on answers 502 quickly, naming it."""
    url = f"http://127.0.0.1:{free_port()}/fhir"
    status, body, elapsed = _post(server_url, published["plans"][0]["id"], _request(failing_patient, fhirServer=url))
    assert status == 502, body
    assert url in body["error"] and elapsed < 15


def test_fhir_authorization_without_fhir_server_is_400(published: dict[str, Any], server_url: str) -> None:
    """Verify that fhirAuthorization without fhirServer is refused (CDS Hooks: it implies fhirServer)."""
    auth = {"access_token": "t", "token_type": "Bearer", "expires_in": 300, "scope": "x"}
    status, body, _ = _post(server_url, published["plans"][0]["id"], _request("p", fhirAuthorization=auth))
    assert status == 400, body


def test_test_ehr_requires_its_token(ehr: Ehr) -> None:
    """Verify that the test EHR answers 401 without the token and 200 with it (so channel (b) proves the token)."""
    assert requests.get(f"{ehr.url}/metadata", timeout=30).status_code == 401
    wrong = requests.get(f"{ehr.url}/metadata", headers={"Authorization": "Bearer nope"}, timeout=30)
    assert wrong.status_code == 401
    ok = requests.get(f"{ehr.url}/metadata", headers={"Authorization": f"Bearer {ehr.token}"}, timeout=30)
    assert ok.status_code == 200


# A prefetch template this service may publish: a read of the context patient, or a search on one resource type
# restricted to that patient (patient= or subject=), optionally with a code filter. Nothing else (no unbounded
# search, no _include or _revinclude: CDS Hooks 2.0's prefetch subset; guideline.cds.prefetch-include-medication,
# off by default, would add _include for EHRs known to support it).
_TEMPLATE = re.compile(
    r"^(Patient/\{\{context\.patientId\}\}"
    r"|[A-Z][A-Za-z]+\?(patient|subject)=Patient/\{\{context\.patientId\}\}(&code=[^&{}\s]+)?)$"
)


def test_discovery_is_cds_hooks_2_with_minimal_templates(server_url: str, published: dict[str, Any]) -> None:
    """Verify discovery against the CDS Hooks 2.0 shape, the pathway service listed first, templates minimal."""
    doc = requests.get(cds_base_for(server_url), timeout=30).json()
    schema = json.loads((SUPPORT / "cds_hooks_discovery.schema.json").read_text(encoding="utf-8"))
    jsonschema.validate(doc, schema)
    ids = [s["id"] for s in doc["services"]]
    assert ids[0] == PATHWAY_SERVICE
    knowledge = Knowledge(published["pkg"].resources)
    offered = knowledge.card_plans(p["id"] for p in published["plans"])
    assert set(offered) <= set(ids)
    # Project safety rule 17: informational recommendations are not advertised unless the server offers them.
    assert not {p["id"] for p in published["plans"]} - set(offered) & set(ids)
    assert doc["services"][0]["extension"]["org.example.gl.pathway-of"] == offered
    for service in doc["services"]:
        templates = list(service.get("prefetch", {}).values())
        assert "Patient/{{context.patientId}}" in templates, service["id"]
        assert len(templates) == len(set(templates)), f"{service['id']}: a template listed twice"
        bad = [t for t in templates if not _TEMPLATE.match(t)]
        assert not bad, f"{service['id']}: templates not minimal/patient-bound: {bad}"
        outside = {t: subset_violations(t) for t in templates if subset_violations(t)}
        assert not outside, f"{service['id']}: templates outside CDS Hooks 2.0's prefetch subset: {outside}"
    pathway = doc["services"][0]["prefetch"]
    union = {t for s in doc["services"][1:] for t in s.get("prefetch", {}).values()}
    assert set(pathway.values()) == union


def test_informational_service_is_not_offered(server_url: str, published: dict[str, Any]) -> None:
    """Verify that, with informational cards off (the default), a call to the R6 service is a 404 saying why."""
    assert not INFORMATIONAL_CARDS
    status, body, _ = _post(server_url, "GLR6Prognosis", _request("p"))
    assert status == 404 and "informational" in body["error"] and "guideline.cds.informational-cards" in body["error"]


def test_unknown_service_is_404(server_url: str, published: dict[str, Any]) -> None:
    """Verify that a call to a service id nobody registered is a 404 with a message."""
    status, body, _ = _post(server_url, "no-such-service", _request("p"))
    assert status == 404 and "no-such-service" in body["error"]


def test_cors_lets_a_browser_client_call(server_url: str) -> None:
    """Verify CORS on discovery and services: any origin, a 204 preflight allowing POST with Authorization."""
    base = cds_base_for(server_url)
    origin = {"Origin": "https://sandbox.cds-hooks.org"}
    discovery = requests.get(base, headers=origin, timeout=30)
    assert discovery.status_code == 200 and discovery.headers["Access-Control-Allow-Origin"] == "*"
    preflight = requests.options(
        f"{base}/{PATHWAY_SERVICE}",
        headers={
            **origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
        timeout=30,
    )
    assert preflight.status_code == 204
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    # FHIR endpoints are not opened to browsers by this.
    fhir = requests.get(f"{server_url}/metadata", headers=origin, timeout=30)
    assert "Access-Control-Allow-Origin" not in fhir.headers


@pytest.fixture(scope="module")
def include_server(published: dict[str, Any]) -> Iterator[str]:
    """A second CDS server started with guideline.cds.prefetch-include-medication=true, the package published."""
    env = {
        **os.environ,
        "GUIDELINE_SERVER_PORT": str(free_port()),
        "GUIDELINE_SERVER_JAVA_OPTS": "-Xmx1g -XX:+UseSerialGC -Dguideline.cds.prefetch-include-medication=true",
    }
    script = str(ROOT / "scripts" / "server")
    started = subprocess.run([script, "start"], env=env, capture_output=True, text=True, check=False)
    try:
        assert started.returncode == 0, f"the server with _include did not start: {started.stderr[-2000:]}"
        url = started.stdout.strip().rstrip("/")
        with Client(url) as client:
            publish_resources(client, published["pkg"].resources)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            services = requests.get(cds_base_for(url), timeout=30).json().get("services") or []
            if services and services[0]["id"] == PATHWAY_SERVICE:
                break
            time.sleep(1)
        yield url
    finally:
        subprocess.run([script, "stop"], env=env, capture_output=True, check=False)


@pytest.mark.full  # a third JVM; the setting's effect on the templates is also a Java unit test (PrefetchTemplatesTest)
def test_prefetch_include_medication_setting_puts_include_back(
    include_server: str, published: dict[str, Any], server_url: str, ehr: Ehr, strict: StrictEhr
) -> None:
    """Verify that guideline.cds.prefetch-include-medication=true publishes _include on every medication template.

    An EHR that supports _include (the plain test EHR) then delivers the referenced Medication in the prefetch
    itself and the cards are those of the default server; the strict EHR refuses those templates (502 naming 400).
    """
    doc = requests.get(cds_base_for(include_server), timeout=30).json()
    medication = [
        t
        for service in doc["services"]
        for t in (service.get("prefetch") or {}).values()
        if t.split("?")[0] in MEDICATION_USES
    ]
    assert medication
    assert all(t.endswith("&_include=" + t.split("?")[0] + ":medication") for t in medication), medication
    bundle = json.loads((CASES_DIR / "r2-on-bromocriptine-by-reference" / "patient.json").read_text(encoding="utf-8"))
    bundle = with_prefix(bundle, "inc-")
    pid = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    context = {"userId": DEFAULT_USER, "patientId": pid}
    templates = doc["services"][0]["prefetch"]
    with Client(ehr.url, token=ehr.token) as data, Client(strict.url, token=strict.token) as strict_data:
        load_patient(data, bundle)
        included = resolve_prefetch(data, templates, context, referenced_medications=False)
        reference = resolve_prefetch(strict_data, published["templates"][PATHWAY_SERVICE], context)
    assert referenced_medications(included) == {}, "the EHR's _include did not deliver the Medication"
    status, body, _ = _post(include_server, PATHWAY_SERVICE, _request(pid, prefetch=included))
    assert status == 200, body
    status, expected, _ = _post(server_url, PATHWAY_SERVICE, _request(pid, prefetch=reference))
    assert status == 200, expected
    assert [c["summary"] for c in body["cards"]] == [c["summary"] for c in expected["cards"]]
    assert body["cards"], "r2-on-bromocriptine-by-reference gives cards"
    auth = {"access_token": strict.token, "token_type": "Bearer", "expires_in": 300, "scope": "x"}
    strict_request = _request(pid, fhirServer=strict.url, fhirAuthorization=auth)
    status, body, _ = _post(include_server, PATHWAY_SERVICE, strict_request)
    assert status == 502 and "400" in body["error"], body
