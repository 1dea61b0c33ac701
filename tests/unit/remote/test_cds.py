"""Verify the CDS Hooks client against a stub server: base URLs, discovery, prefetch and calls."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from guideline.core.errors import ServerRejectedError, UsageError
from guideline.remote.cds import (
    DEFAULT_USER,
    call,
    cds_base_for,
    channel_body,
    discover,
    fhir_base_for,
    referenced_medications,
    resolve_prefetch,
)
from guideline.remote.http import Client, RetryPolicy
from tests.unit.remote.stub import Reply, Stub

CARD = {"summary": "Start a low-fat diet", "indicator": "info", "source": {"label": "GL guideline"}}
SERVICES: dict[str, Any] = {
    "services": [
        {
            "id": "GLR4Diet",
            "hook": "patient-view",
            "title": "Diet",
            "prefetch": {
                "patient": "Patient/{{context.patientId}}",
                "obs": "Observation?subject={{ context.patientId }}",
            },
        },
        {"id": "GLR2Other", "hook": "order-select"},
    ]
}


@pytest.fixture
def client(stub: Stub) -> Iterator[Client]:
    with Client(f"{stub.url}/fhir", retry=RetryPolicy(attempts=1)) as c:
        yield c


@pytest.mark.parametrize(
    ("server", "cds", "fhir"),
    [
        ("http://h:8080/fhir", "http://h:8080/cds-services", "http://h:8080/fhir"),
        ("http://h:8080/fhir/", "http://h:8080/cds-services", "http://h:8080/fhir"),
        ("http://h:8080/cds-services", "http://h:8080/cds-services", "http://h:8080/fhir"),
        ("http://h:8080/cds-services/", "http://h:8080/cds-services", "http://h:8080/fhir"),
        ("http://h:8080", "http://h:8080/cds-services", "http://h:8080/fhir"),
        ("https://h/base/fhir", "https://h/base/cds-services", "https://h/base/fhir"),
    ],
)
def test_cds_and_fhir_bases(server: str, cds: str, fhir: str) -> None:
    """Verify that either base is derived from a FHIR base, a CDS base or a bare server (HAPI layout)."""
    assert cds_base_for(server) == cds
    assert fhir_base_for(server) == fhir


def test_discover_returns_the_services(stub: Stub, client: Client) -> None:
    """Verify that discovery reads /cds-services next to the FHIR base and returns its services."""
    stub.routes["GET /cds-services"] = Reply(200, SERVICES, {"Content-Type": "application/json"})
    assert [s["id"] for s in discover(client)] == ["GLR4Diet", "GLR2Other"]
    assert stub.seen[0].path == "/cds-services"


@pytest.mark.parametrize(
    "body",
    [{"services": "none"}, {"services": [{"id": "x"}]}, {"services": ["x"]}, ["services"], {}],
    ids=["not-a-list", "no-hook", "not-objects", "a-list", "empty"],
)
def test_malformed_discovery_is_a_clear_error(stub: Stub, client: Client, body: Any) -> None:
    """Verify that a discovery answer of the wrong shape is refused with what was expected."""
    stub.routes["GET /cds-services"] = Reply(200, body)
    with pytest.raises(ServerRejectedError, match="did not answer a CDS Hooks discovery document"):
        discover(client)


def test_resolve_prefetch_fills_tokens_and_reads_the_fhir_server(stub: Stub, client: Client) -> None:
    """Verify that {{context.X}} tokens (spaces allowed) are filled and each query read from the FHIR base."""
    stub.routes["GET /fhir/Patient/p1"] = Reply(200, {"resourceType": "Patient", "id": "p1"})
    stub.routes["GET /fhir/Observation"] = Reply(200, {"resourceType": "Bundle", "type": "searchset"})
    out = resolve_prefetch(client, SERVICES["services"][0]["prefetch"], {"patientId": "p1", "userId": "u"})
    assert out == {
        "patient": {"resourceType": "Patient", "id": "p1"},
        "obs": {"resourceType": "Bundle", "type": "searchset"},
    }
    assert [s.path for s in stub.seen] == ["/fhir/Observation", "/fhir/Patient/p1"]  # sorted by key
    assert stub.seen[0].query == {"subject": ["p1"]}


def test_resolve_prefetch_needs_every_context_value(stub: Stub, client: Client) -> None:
    """Verify that a template asking for a context value the call lacks is a usage error before any read."""
    with pytest.raises(UsageError, match="prefetch 'enc' needs context.encounterId"):
        resolve_prefetch(client, {"enc": "Encounter/{{context.encounterId}}"}, {"patientId": "p1"})
    assert stub.seen == []


def test_resolve_prefetch_refuses_another_server(stub: Stub, client: Client) -> None:
    """Verify that a template naming another host is refused (the bearer token would go there)."""
    with pytest.raises(ServerRejectedError, match="points to another server"):
        resolve_prefetch(
            client, {"p": "https://elsewhere.example/fhir/Patient/{{context.patientId}}"}, {"patientId": "1"}
        )
    assert stub.seen == [] and client.requests_sent == 0


def test_call_posts_a_cds_hooks_request(stub: Stub, client: Client) -> None:
    """Verify that a call POSTs hook, a UUID hookInstance, fhirServer and context as application/json."""
    stub.routes["POST /cds-services/GLR4Diet"] = Reply(200, {"cards": [CARD]}, {"Content-Type": "application/json"})
    resp = call(client, "GLR4Diet", patient="p1")
    assert resp == {"cards": [CARD]}
    req = stub.seen[0]
    assert req.headers["Content-Type"] == "application/json"
    body = req.json()
    assert body["hook"] == "patient-view"
    assert uuid.UUID(body["hookInstance"])
    assert body["fhirServer"] == f"{stub.url}/fhir"
    assert body["context"] == {"userId": DEFAULT_USER, "patientId": "p1"}
    assert "prefetch" not in body


def test_call_with_prefetch_sends_what_the_service_asks_for(stub: Stub, client: Client) -> None:
    """Verify that with prefetch the service's templates are resolved and sent along with the call."""
    stub.routes["GET /cds-services"] = Reply(200, SERVICES)
    stub.routes["GET /fhir/Patient/p1"] = Reply(200, {"resourceType": "Patient", "id": "p1"})
    stub.routes["GET /fhir/Observation"] = Reply(200, {"resourceType": "Bundle", "type": "searchset"})
    stub.routes["POST /cds-services/GLR4Diet"] = Reply(200, {"cards": []})
    call(client, "GLR4Diet", patient="p1", user="Practitioner/u", prefetch=True)
    body = stub.seen[-1].json()
    assert body["fhirServer"] == f"{stub.url}/fhir"
    assert body["context"]["userId"] == "Practitioner/u"
    assert body["prefetch"]["patient"]["id"] == "p1"
    assert set(body["prefetch"]) == {"patient", "obs"}


def test_call_with_prefetch_for_an_unknown_service(stub: Stub, client: Client) -> None:
    """Verify that prefetch for a service the server does not list is a usage error naming the known ones."""
    stub.routes["GET /cds-services"] = Reply(200, SERVICES)
    with pytest.raises(UsageError, match="no CDS service 'Nope'.*known: GLR2Other, GLR4Diet"):
        call(client, "Nope", patient="p1", prefetch=True)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"cardz": []}, "without a 'cards' list"),
        ({"cards": {}}, "without a 'cards' list"),
        ({"cards": [{"summary": "s"}]}, "card 0 lacks required indicator, source"),
        ({"cards": [CARD, {"indicator": "info", "source": {}}]}, "card 1 lacks required summary"),
    ],
)
def test_malformed_cds_responses_are_clear_errors(stub: Stub, client: Client, answer: Any, expected: str) -> None:
    """Verify that an answer without a cards list, or a card lacking required fields, is refused."""
    stub.routes["POST /cds-services/GLR4Diet"] = Reply(200, answer)
    with pytest.raises(ServerRejectedError, match=expected):
        call(client, "GLR4Diet", patient="p1")


def test_call_for_a_missing_service_is_not_found(stub: Stub, client: Client) -> None:
    """Verify that a 404 from the service endpoint is a rejection with its status, not a retry."""
    with pytest.raises(ServerRejectedError) as err:
        call(client, "Nope", patient="p1")
    assert err.value.status == 404 and len(stub.seen) == 1


def _channel_body(stub: Stub, client: Client, channel: str) -> dict[str, Any]:
    stub.routes["GET /fhir/Patient/p1"] = Reply(200, {"resourceType": "Patient", "id": "p1"})
    stub.routes["GET /fhir/Observation"] = Reply(200, {"resourceType": "Bundle", "type": "searchset"})
    templates = SERVICES["services"][0]["prefetch"]
    return channel_body(channel, templates, {"patientId": "p1", "userId": DEFAULT_USER}, client, "ehr-token")


@pytest.mark.parametrize(
    ("channel", "keys", "nulls", "fhir_server", "auth"),
    [
        ("server", None, set(), False, False),
        ("prefetch", {"patient", "obs"}, set(), False, False),
        ("fhir", None, set(), True, True),
        ("both", {"patient", "obs"}, set(), True, True),
        ("partial", {"patient"}, set(), True, True),
        ("null", {"patient", "obs"}, {"obs"}, True, True),
    ],
)
def test_channel_bodies(
    stub: Stub,
    client: Client,
    channel: str,
    keys: set[str] | None,
    nulls: set[str],
    fhir_server: bool,
    auth: bool,
) -> None:
    """Verify what each data channel sends: which prefetch keys (null ones), fhirServer, fhirAuthorization."""
    body = _channel_body(stub, client, channel)
    assert (set(body["prefetch"]) if "prefetch" in body else None) == keys
    assert {k for k, v in body.get("prefetch", {}).items() if v is None} == nulls
    assert ("fhirServer" in body) == fhir_server
    if fhir_server:
        assert body["fhirServer"] == f"{stub.url}/fhir"
    assert ("fhirAuthorization" in body) == auth
    if auth:
        assert body["fhirAuthorization"]["access_token"] == "ehr-token"  # noqa: S105 (test value)
        assert body["fhirAuthorization"]["token_type"] == "Bearer"  # noqa: S105 (a token type)


def test_unknown_channel_is_a_usage_error(client: Client) -> None:
    """Verify that a channel name outside CHANNELS is refused before any request."""
    with pytest.raises(UsageError, match="unknown data channel 'smoke'"):
        channel_body("smoke", {}, {}, client, None)
    assert client.requests_sent == 0


def _medication_request(rid: str, ref: str) -> dict[str, Any]:
    return {"resourceType": "MedicationRequest", "id": rid, "medicationReference": {"reference": ref}}


def test_resolve_prefetch_sends_every_page_as_one_searchset(stub: Stub, client: Client) -> None:
    """Verify that a paged search is followed to its end and sent as one searchset without a next link."""
    page2 = f"{stub.url}/fhir?_getpages=abc&_getpagesoffset=1"
    stub.routes["GET /fhir/Condition"] = Reply(
        200,
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "link": [{"relation": "next", "url": page2}],
            "entry": [{"resource": {"resourceType": "Condition", "id": "c1"}}],
        },
    )
    stub.routes["GET /fhir"] = Reply(
        200,
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [
                {"resource": {"resourceType": "Condition", "id": "c2"}},
                {"resource": {"resourceType": "OperationOutcome"}, "search": {"mode": "outcome"}},
            ],
        },
    )
    out = resolve_prefetch(client, {"c": "Condition?patient={{context.patientId}}"}, {"patientId": "p1"})
    assert "link" not in out["c"]
    assert [e["resource"].get("id") for e in out["c"]["entry"]] == ["c1", "c2", None]
    assert [s.path for s in stub.seen] == ["/fhir/Condition", "/fhir"]


def test_resolve_prefetch_refuses_a_next_link_to_another_server(stub: Stub, client: Client) -> None:
    """Verify that a next link to another host is not followed (the bearer token would go there)."""
    stub.routes["GET /fhir/Condition"] = Reply(
        200,
        {"resourceType": "Bundle", "link": [{"relation": "next", "url": "https://elsewhere.example/fhir?p=2"}]},
    )
    with pytest.raises(ServerRejectedError, match="next link points to another server"):
        resolve_prefetch(client, {"c": "Condition?patient={{context.patientId}}"}, {"patientId": "p1"})


def test_resolve_prefetch_adds_referenced_medications_once(stub: Stub, client: Client) -> None:
    """Verify that each referenced Medication a search lacks is read once and sent as an include entry.

    Contained ones and ones the search returned are not read; one the FHIR server lacks is left out.
    """
    stub.routes["GET /fhir/MedicationRequest"] = Reply(
        200,
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [
                {"resource": _medication_request("mr1", "Medication/m1")},
                {"resource": _medication_request("mr2", "Medication/m1")},
                {"resource": _medication_request("mr3", "#contained")},
                {"resource": _medication_request("mr4", "Medication/there")},
                {"resource": _medication_request("mr5", "Medication/gone")},
                {"resource": {"resourceType": "Medication", "id": "there"}, "search": {"mode": "include"}},
            ],
        },
    )
    stub.routes["GET /fhir/Medication/m1"] = Reply(200, {"resourceType": "Medication", "id": "m1"})
    templates = {"mr": "MedicationRequest?patient={{context.patientId}}"}
    out = resolve_prefetch(client, templates, {"patientId": "p1"})
    assert out["mr"]["entry"][-1] == {
        "resource": {"resourceType": "Medication", "id": "m1"},
        "search": {"mode": "include"},
    }
    assert len(out["mr"]["entry"]) == 7
    assert [s.path for s in stub.seen] == ["/fhir/MedicationRequest", "/fhir/Medication/m1", "/fhir/Medication/gone"]
    stub.seen.clear()
    bare = resolve_prefetch(client, templates, {"patientId": "p1"}, referenced_medications=False)
    assert len(bare["mr"]["entry"]) == 6 and [s.path for s in stub.seen] == ["/fhir/MedicationRequest"]
    assert referenced_medications(bare) == {
        "Medication/m1": "MedicationRequest/mr1",
        "Medication/gone": "MedicationRequest/mr5",
    }
