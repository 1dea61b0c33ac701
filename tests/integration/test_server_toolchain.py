"""Verify each real server part: capabilities, $apply, CDS Hooks and $evaluate vs the local engine."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import pytest

from guideline.content.cql import Engine, compile_cql
from guideline.remote.http import Client

pytestmark = pytest.mark.server

TINY_CQL = """library {name} version '1.0.0'
using FHIR version '4.0.1'
include FHIRHelpers version '4.0.1' called FHIRHelpers
codesystem "LOINC": 'http://loinc.org'
code "Glucose": '1558-6' from "LOINC"
context Patient
define "Is Female": Patient.gender = 'female'
define "Age": AgeInYearsAt(@2026-06-01T00:00:00.0Z)
define "Count": Count([Observation: "Glucose"])
define "Sum Decimal": 1.5 + 2.25
define "Dose": 10 'mg' + 5 'mg'
define "Numbers": {{1, 2, 3}}
define "Nothing": null as Integer
define "Has Glucose": exists [Observation: "Glucose"]
define "Latest Glucose":
  First([Observation: "Glucose"] O sort by FHIRHelpers.ToDateTime(effective as FHIR.dateTime) desc)
define "Latest Glucose Value": FHIRHelpers.ToQuantity("Latest Glucose".value as FHIR.Quantity)
"""


def _b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


@pytest.fixture(scope="module")
def client(server_url: str) -> Client:
    return Client(server_url)


@pytest.fixture(scope="module")
def tiny(client: Client, engine: Engine) -> dict[str, Any]:
    """Publish a one-action PlanDefinition + ActivityDefinition + Library and two patients."""
    tag = uuid.uuid4().hex[:8]
    name = f"Tiny{tag}"
    cql = TINY_CQL.format(name=name)
    res = compile_cql(cql, engine=engine)
    assert res.ok, [m.render() for m in res.errors]
    base = "http://example.org/fhir/test"
    lib = {
        "resourceType": "Library",
        "id": name,
        "url": f"{base}/Library/{name}",
        "version": "1.0.0",
        "name": name,
        "status": "active",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/library-type", "code": "logic-library"}]},
        "content": [
            {"contentType": "text/cql", "data": _b64(cql)},
            {"contentType": "application/elm+json", "data": _b64(json.dumps(res.elm))},
        ],
    }
    ad = {
        "resourceType": "ActivityDefinition",
        "id": f"{name}-ad",
        "url": f"{base}/ActivityDefinition/{name}-ad",
        "version": "1.0.0",
        "name": f"{name}Order",
        "status": "active",
        "kind": "ServiceRequest",
        "intent": "proposal",
        "code": {"coding": [{"system": "http://loinc.org", "code": "1558-6", "display": "Fasting glucose"}]},
    }
    pd = {
        "resourceType": "PlanDefinition",
        "id": name,
        "url": f"{base}/PlanDefinition/{name}",
        "version": "1.0.0",
        "name": name,
        "title": "Tiny check",
        "status": "active",
        "type": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/plan-definition-type", "code": "eca-rule"}]
        },
        "library": [f"{base}/Library/{name}|1.0.0"],
        "action": [
            {
                "title": "Order fasting glucose",
                "description": "Female patients get this card.",
                "priority": "routine",
                "documentation": [{"type": "documentation", "display": "Tiny test source"}],
                "trigger": [{"type": "named-event", "name": "patient-view"}],
                "condition": [
                    {
                        "kind": "applicability",
                        "expression": {"language": "text/cql-identifier", "expression": "Is Female"},
                    }
                ],
                "definitionCanonical": f"{base}/ActivityDefinition/{name}-ad|1.0.0",
            }
        ],
    }

    def patient(pid: str, gender: str) -> dict[str, Any]:
        return {"resourceType": "Patient", "id": pid, "gender": gender, "birthDate": "1990-06-02"}

    obs = {
        "resourceType": "Observation",
        "id": f"{tag}-glu",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "1558-6"}]},
        "subject": {"reference": f"Patient/{tag}-f"},
        "effectiveDateTime": "2026-05-01T08:00:00Z",
        "valueQuantity": {
            "value": 131,
            "unit": "mg/dL",
            "system": "http://unitsofmeasure.org",
            "code": "mg/dL",
        },
    }
    resources = [lib, ad, pd, patient(f"{tag}-f", "female"), patient(f"{tag}-m", "male"), obs]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in resources
        ],
    }
    resp = client.post_json("", bundle)
    assert resp["resourceType"] == "Bundle" and resp["type"] == "transaction-response"
    return {
        "name": name,
        "tag": tag,
        "cql": cql,
        "elm": res.elm,
        "obs": obs,
        "female": f"{tag}-f",
        "male": f"{tag}-m",
        "base": base,
    }


def test_capability_statement_is_r4_with_apply(client: Client) -> None:
    """Verify that the server says FHIR 4.0.1 and offers PlanDefinition $apply and Library $evaluate."""
    cs = client.get_json("metadata")
    assert cs["fhirVersion"] == "4.0.1"
    rest = cs["rest"][0]
    ops = {r["type"]: {o["name"] for o in r.get("operation", [])} for r in rest["resource"]}
    assert "apply" in ops["PlanDefinition"]
    assert "evaluate" in ops["Library"]


def _apply(client: Client, name: str, patient: str) -> dict[str, Any]:
    result: dict[str, Any] = client.get_json(f"PlanDefinition/{name}/$apply", params={"subject": f"Patient/{patient}"})
    return result


def _request_group(careplan: dict[str, Any]) -> dict[str, Any]:
    assert careplan["resourceType"] == "CarePlan"
    messages = [e for e in careplan.get("extension", []) if e["url"].endswith("cqf-messages")]
    contained = {c["id"]: c for c in careplan.get("contained", [])}
    outcomes = [c for c in contained.values() if c["resourceType"] == "OperationOutcome"]
    assert not messages and not outcomes, json.dumps(outcomes)[:2000]
    ref = careplan["activity"][0]["reference"]["reference"].lstrip("#")
    rg = contained[ref]
    assert rg["resourceType"] == "RequestGroup"
    return rg


def test_apply_female_gets_the_action(client: Client, tiny: dict[str, Any]) -> None:
    """Verify that $apply returns a CarePlan whose RequestGroup holds exactly the one action."""
    cp = _apply(client, tiny["name"], tiny["female"])
    rg = _request_group(cp)
    assert [a["title"] for a in rg.get("action", [])] == ["Order fasting glucose"]
    requests = [c for c in cp["contained"] if c["resourceType"] == "ServiceRequest"]
    assert [c["code"]["coding"][0]["code"] for c in requests] == ["1558-6"]


def test_apply_male_gets_no_action(client: Client, tiny: dict[str, Any]) -> None:
    """Verify that the applicability condition is honoured: a male patient gets no action."""
    rg = _request_group(_apply(client, tiny["name"], tiny["male"]))
    assert rg.get("action", []) == []


def _wait_for_service(client: Client, service_id: str, bound_s: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + bound_s
    seen: list[str] = []
    while time.monotonic() < deadline:
        services = client.get_json(client.base_url.rsplit("/fhir", 1)[0] + "/cds-services")["services"]
        seen = [s["id"] for s in services]
        for s in services:
            if s["id"] == service_id:
                return dict(s)
        time.sleep(1)
    raise AssertionError(f"CDS service {service_id} not registered within {bound_s} s; have {seen}")


def test_cds_hooks_lists_and_answers(client: Client, tiny: dict[str, Any]) -> None:
    """Verify that the PlanDefinition is a CDS service and a patient-view call returns its card."""
    svc = _wait_for_service(client, tiny["name"])
    assert svc["hook"] == "patient-view"
    cds_base = client.base_url.rsplit("/fhir", 1)[0] + "/cds-services"
    body = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": client.base_url,
        "context": {"userId": "Practitioner/example", "patientId": tiny["female"]},
    }
    resp = client.post_json(f"{cds_base}/{tiny['name']}", body, content_type="application/json")
    cards = resp["cards"]
    assert [c["summary"] for c in cards] == ["Order fasting glucose"]
    assert cards[0]["indicator"] == "info"
    body["context"]["patientId"] = tiny["male"]
    body["hookInstance"] = str(uuid.uuid4())
    assert client.post_json(f"{cds_base}/{tiny['name']}", body, content_type="application/json")["cards"] == []


def _normalise_server(value: dict[str, Any]) -> Any:
    """A $evaluate Parameters part as a plain value comparable with the local engine's JSON."""
    for k, v in value.items():
        if k == "valueBoolean" or k == "valueInteger" or k == "valueString":
            return v
        if k == "valueDecimal":
            return float(v)
        if k == "valueQuantity":
            return {"type": "Quantity", "value": float(v["value"]), "unit": v.get("code") or v.get("unit")}
    if "resource" in value:
        return value["resource"].get("id")
    # A null result is a part with no value (HAPI marks it with a data-absent-reason extension).
    return None


def test_evaluate_agrees_with_local_engine(client: Client, tiny: dict[str, Any], engine: Engine) -> None:
    """Verify that Library/$evaluate on the server and our local engine give the same define values."""
    defines = [
        "Is Female",
        "Age",
        "Count",
        "Sum Decimal",
        "Dose",
        "Numbers",
        "Nothing",
        "Has Glucose",
        "Latest Glucose Value",
    ]
    params = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "subject", "valueString": f"Patient/{tiny['female']}"},
            *[{"name": "expression", "valueString": d} for d in defines],
        ],
    }
    out = client.post_json(f"Library/{tiny['name']}/$evaluate", params)
    server: dict[str, list[Any]] = {}
    for p in out.get("parameter", []):
        server.setdefault(p["name"], []).append(_normalise_server(p))
    helpers = engine.compile(
        "FHIRHelpers", {}, {"options": ["EnableLocators", "EnableResultTypes"], "signatureLevel": "Overloads"}
    )
    assert helpers.elm
    engine.load(f"tiny-{tiny['tag']}", {tiny["name"]: tiny["elm"], "FHIRHelpers": helpers.elm})
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "resource": {
                    "resourceType": "Patient",
                    "id": tiny["female"],
                    "gender": "female",
                    "birthDate": "1990-06-02",
                }
            },
            {"resource": tiny["obs"]},
        ],
    }
    local = engine.evaluate(f"tiny-{tiny['tag']}", tiny["name"], [bundle], at="2026-06-01T12:00:00Z")[tiny["female"]]

    def loc(v: Any) -> list[Any]:
        if v is None:
            return [None]
        if isinstance(v, list):
            return [x for x in v]
        if isinstance(v, dict) and v.get("type") == "Quantity":
            return [{"type": "Quantity", "value": float(v["value"]), "unit": v["unit"]}]
        if isinstance(v, float):
            return [v]
        return [v]

    diffs = {d: (server.get(d, []), loc(local[d])) for d in defines if server.get(d, []) != loc(local[d])}
    assert not diffs, f"server vs local: {diffs}"
