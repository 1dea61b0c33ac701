"""An EHR-side CDS Hooks 2.0 client for interoperability testing: discovery, calls, prefetch, cards."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from guideline.core.errors import ServerRejectedError, UsageError
from guideline.remote.http import Client

DEFAULT_USER = "Practitioner/example"

# How the patient's data reaches the service (CDS Hooks 2.0), the EHR being `data` (a FHIR client):
#   server   fhirServer = the CDS server's own FHIR endpoint, no prefetch (data stored next to the knowledge)
#   prefetch the EHR resolves every prefetch template; no fhirServer
#   fhir     fhirServer + fhirAuthorization (the EHR's bearer token), no prefetch
#   both     every prefetch template resolved, plus fhirServer + fhirAuthorization
#   partial  only the Patient prefetch (other keys omitted), plus fhirServer + fhirAuthorization
#   null     every prefetch key but the Patient sent as null ("could not fetch"), plus fhirServer + fhirAuthorization
CHANNELS = ("server", "prefetch", "fhir", "both", "partial", "null")
_TOKEN = re.compile(r"\{\{\s*context\.([A-Za-z]+)\s*\}\}")


def cds_base_for(server: str) -> str:
    """The CDS Hooks base for a server URL: '.../fhir' maps to '.../cds-services' (HAPI layout)."""
    s = server.rstrip("/")
    if s.endswith("/cds-services"):
        return s
    if s.endswith("/fhir"):
        s = s[: -len("/fhir")]
    return f"{s}/cds-services"


def fhir_base_for(server: str) -> str:
    """The FHIR base for a server URL: '.../cds-services' maps to '.../fhir' (HAPI layout), '.../fhir' stays."""
    s = server.rstrip("/")
    if s.endswith("/cds-services"):
        s = s[: -len("/cds-services")]
    return s if s.endswith("/fhir") else f"{s}/fhir"


def discover(client: Client) -> list[dict[str, Any]]:
    """GET /cds-services; a malformed answer is an error that says what was wrong."""
    body = client.get_json(cds_base_for(client.base_url), ok=(200,))
    services = body.get("services") if isinstance(body, dict) else None
    if not isinstance(services, list) or not all(isinstance(s, dict) and "id" in s and "hook" in s for s in services):
        raise ServerRejectedError(
            f"{cds_base_for(client.base_url)} did not answer a CDS Hooks discovery "
            "document ({'services': [{id, hook, ...}]})"
        )
    return services


def resolve_prefetch(client: Client, templates: dict[str, str], context: dict[str, str]) -> dict[str, Any]:
    """Fill {{context.X}} tokens and read each query from the FHIR server, as an EHR would.

    A template naming another server is refused: the session's bearer token would go with it.
    """
    out: dict[str, Any] = {}
    for key, template in sorted(templates.items()):

        def fill(m: re.Match[str], key: str = key) -> str:
            name = m.group(1)
            if name not in context:
                raise UsageError(f"prefetch '{key}' needs context.{name}, which this call does not have")
            return context[name]

        query = _TOKEN.sub(fill, template)
        if not client.same_origin(query):
            raise ServerRejectedError(
                f"prefetch '{key}' of the CDS service points to another server ({query}); not read. "
                "Prefetch templates are FHIR queries relative to the FHIR server"
            )
        # A "Patient/123" read returns the resource; a search returns a Bundle: both are valid prefetch.
        out[key] = client.get_json(query)
    return out


def _patient_key(templates: dict[str, str]) -> str | None:
    return next(
        (k for k, t in sorted(templates.items()) if t.replace(" ", "").startswith("Patient/{{context.patientId")), None
    )


def channel_body(
    channel: str,
    templates: dict[str, str],
    context: dict[str, str],
    data: Client,
    data_token: str | None,
    resolved: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The data part of a hook call (prefetch, fhirServer, fhirAuthorization) for one channel (see CHANNELS).

    `resolved`: the templates already read from `data` (resolve_prefetch), to send several channels of one call.
    """
    if channel not in CHANNELS:
        raise UsageError(f"unknown data channel '{channel}'; use one of {', '.join(CHANNELS)}")
    body: dict[str, Any] = {}
    if channel in ("prefetch", "both", "partial", "null"):
        prefetch: dict[str, Any] = (
            dict(resolved) if resolved is not None else resolve_prefetch(data, templates, context)
        )
        keep = _patient_key(templates)
        if channel == "partial":
            prefetch = {k: v for k, v in prefetch.items() if k == keep}
        elif channel == "null":
            prefetch = {k: (v if k == keep else None) for k, v in prefetch.items()}
        body["prefetch"] = prefetch
    if channel not in ("prefetch", "server"):
        body["fhirServer"] = data.base_url
    if channel not in ("prefetch", "server") and data_token:
        # The EHR's own token for its FHIR server (CDS Hooks 2.0 fhirAuthorization); short-lived in a real EHR.
        body["fhirAuthorization"] = {
            "access_token": data_token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "guideline-cds-client",
        }
    return body


def call(
    client: Client,
    service_id: str,
    *,
    hook: str = "patient-view",
    patient: str,
    user: str = DEFAULT_USER,
    prefetch: bool = False,
    channel: str | None = None,
    data: Client | None = None,
    data_token: str | None = None,
    templates: dict[str, str] | None = None,
    resolved: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """POST a hook call; returns the parsed CDS response (cards checked for shape).

    The patient's data lives on `data` (the EHR's FHIR server, bearer token `data_token`; default the
    client's own FHIR server) and reaches the service by `channel` (see CHANNELS; default "server", or
    "both" with `prefetch`). Reading prefetch needs the server checked once first (capability.CDS_PREFETCH).
    `templates` (the service's prefetch templates) saves a discovery call per call, `resolved` (those
    templates already read from `data`) the reads.
    """
    channel = channel or ("both" if prefetch else "server")
    data = data or client
    context = {"userId": user, "patientId": patient}
    body: dict[str, Any] = {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context}
    if templates is None and channel not in ("server", "fhir"):
        templates = _templates(client, service_id)
    body.update(channel_body(channel, templates or {}, context, data, data_token, resolved))
    if channel == "server":
        body["fhirServer"] = fhir_base_for(client.base_url)
    url = f"{cds_base_for(client.base_url)}/{service_id}"
    resp = client.post_json(url, body, content_type="application/json", ok=(200,))
    if not isinstance(resp, dict) or not isinstance(resp.get("cards"), list):
        raise ServerRejectedError(f"{url} answered without a 'cards' list: {json.dumps(resp)[:200]}")
    for i, card in enumerate(resp["cards"]):
        missing = [k for k in ("summary", "indicator", "source") if k not in card]
        if missing:
            raise ServerRejectedError(f"{url}: card {i} lacks required {', '.join(missing)} (CDS Hooks 2.0)")
    return resp


def _templates(client: Client, service_id: str) -> dict[str, str]:
    services = {s["id"]: s for s in discover(client)}
    if service_id not in services:
        raise UsageError(
            f"no CDS service '{service_id}' on {cds_base_for(client.base_url)}; "
            f"known: {', '.join(sorted(services)) or 'none'}"
        )
    return dict(services[service_id].get("prefetch") or {})
