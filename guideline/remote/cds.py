"""An EHR-side CDS Hooks 2.0 client for interoperability testing: discovery, calls, prefetch, cards."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from guideline.core.errors import ServerRejectedError, UsageError
from guideline.remote.http import Client

DEFAULT_USER = "Practitioner/example"
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


def call(
    client: Client,
    service_id: str,
    *,
    hook: str = "patient-view",
    patient: str,
    user: str = DEFAULT_USER,
    prefetch: bool = False,
    fhir_server: str | None = None,
) -> dict[str, Any]:
    """POST a hook call; returns the parsed CDS response (cards checked for shape).

    With `prefetch`, the service's prefetch templates are read from the FHIR server (the client's
    base) and sent along; callers check that server once first (capability.CDS_PREFETCH).
    """
    context = {"userId": user, "patientId": patient}
    body: dict[str, Any] = {
        "hook": hook,
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": fhir_server or fhir_base_for(client.base_url),
        "context": context,
    }
    if prefetch:
        services = {s["id"]: s for s in discover(client)}
        if service_id not in services:
            raise UsageError(
                f"no CDS service '{service_id}' on {cds_base_for(client.base_url)}; "
                f"known: {', '.join(sorted(services)) or 'none'}"
            )
        body["prefetch"] = resolve_prefetch(client, services[service_id].get("prefetch") or {}, context)
    url = f"{cds_base_for(client.base_url)}/{service_id}"
    resp = client.post_json(url, body, content_type="application/json", ok=(200,))
    if not isinstance(resp, dict) or not isinstance(resp.get("cards"), list):
        raise ServerRejectedError(f"{url} answered without a 'cards' list: {json.dumps(resp)[:200]}")
    for i, card in enumerate(resp["cards"]):
        missing = [k for k in ("summary", "indicator", "source") if k not in card]
        if missing:
            raise ServerRejectedError(f"{url}: card {i} lacks required {', '.join(missing)} (CDS Hooks 2.0)")
    return resp
