"""An EHR-side CDS Hooks 2.0 client for interoperability testing: discovery, calls, prefetch, cards."""

from __future__ import annotations

import datetime as dt
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


# Resource types whose medicationReference the guideline's logic follows to a Medication (bromocriptine, insulin).
MEDICATION_USES = ("MedicationRequest", "MedicationStatement", "MedicationAdministration", "MedicationDispense")
_MEDICATION_REF = re.compile(r"^Medication/([A-Za-z0-9\-.]{1,64})(/_history/[^/]+)?$")
# A search whose next links never end is cut here, as the CDS server cuts it (PrefetchResolver.MAX_PAGES).
MAX_PAGES = 50


def resolve_prefetch(
    client: Client, templates: dict[str, str], context: dict[str, str], *, referenced_medications: bool = True
) -> dict[str, Any]:
    """Fill {{context.X}} tokens and read each query from the FHIR server, as an EHR would.

    A search's pages are followed and sent as one searchset: CDS Hooks 2.0 prefetch carries the whole result,
    never a next link for the service to follow. With `referenced_medications` (default), the Medications
    that the prefetched medication resources reference (`medicationReference`) and no search returned are
    read by id and sent in the same searchset as `include` entries, as an EHR honouring `_include` would send
    them: the templates stay inside CDS Hooks 2.0's prefetch subset (no `_include`), and a prefetch-only call
    missing a referenced Medication is answered 412. A template naming another server is refused: the
    session's bearer token would go with it.
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
        out[key] = _all_pages(client, client.get_json(query), query)
    if referenced_medications:
        _add_referenced_medications(client, out)
    return out


def _next_link(bundle: dict[str, Any]) -> str | None:
    return next((lk.get("url") for lk in bundle.get("link") or [] if lk.get("relation") == "next"), None)


def _all_pages(client: Client, first: Any, query: str) -> Any:
    """A search's result as one searchset: `first` unchanged when it is all, else every page's entries in it."""
    if not isinstance(first, dict) or first.get("resourceType") != "Bundle" or not _next_link(first):
        return first
    merged = {k: v for k, v in first.items() if k != "link"}
    merged["entry"] = list(first.get("entry") or [])
    page: dict[str, Any] = first
    for _ in range(MAX_PAGES - 1):
        url = _next_link(page)
        if not url:
            return merged
        if not client.same_origin(url):
            raise ServerRejectedError(f"{query}: the next link points to another server ({url}); not read")
        page = client.get_json(url)
        if not isinstance(page, dict) or page.get("resourceType") != "Bundle":
            raise ServerRejectedError(f"{query}: the next page ({url}) is not a Bundle")
        merged["entry"] += page.get("entry") or []
    if _next_link(page):
        raise ServerRejectedError(f"{query} has more than {MAX_PAGES} pages; not sent as prefetch")
    return merged


def _resources(value: Any) -> list[dict[str, Any]]:
    """The resources of a prefetch value: a Bundle's entries, or the resource itself."""
    if not isinstance(value, dict):
        return []
    if value.get("resourceType") != "Bundle":
        return [value]
    return [e["resource"] for e in value.get("entry") or [] if isinstance(e.get("resource"), dict)]


def referenced_medications(prefetch: dict[str, Any]) -> dict[str, str]:
    """`Medication/id` -> its first referrer (`Type/id`) for every relative medicationReference the prefetch lacks.

    Contained (`#id`) Medications travel with their resource and are not listed.
    """
    resources = [r for v in prefetch.values() for r in _resources(v)]
    present = {f"{r.get('resourceType')}/{r.get('id')}" for r in resources}
    missing: dict[str, str] = {}
    for r in resources:
        key = _medication_key(r)
        if key and key not in present:
            missing.setdefault(key, f"{r['resourceType']}/{r.get('id')}")
    return missing


def _add_referenced_medications(client: Client, prefetch: dict[str, Any]) -> None:
    """Read each referenced Medication the prefetch lacks (once) and add it to its referrer's searchset."""
    missing = referenced_medications(prefetch)
    if not missing:
        return
    found: dict[str, Any] = {}
    for ref in missing:
        resp = client.request("GET", ref, ok=(200, 404, 410))
        if resp.status_code != 200:  # one the EHR does not have is left out: the service then says so (412)
            continue
        try:
            found[ref] = resp.json()
        except ValueError:
            raise ServerRejectedError(f"{client.url(ref)} answered a Medication read with non-JSON content") from None
    for value in prefetch.values():
        if not isinstance(value, dict) or value.get("resourceType") != "Bundle":
            continue
        for r in _resources(value):
            key = _medication_key(r)
            if key in found:
                entry = {"resource": found.pop(key), "search": {"mode": "include"}}
                value["entry"] = [*(value.get("entry") or []), entry]


def _medication_key(resource: dict[str, Any]) -> str | None:
    """`Medication/id` of a medication resource's relative medicationReference, else None."""
    if resource.get("resourceType") not in MEDICATION_USES:
        return None
    ref = (resource.get("medicationReference") or {}).get("reference")
    m = _MEDICATION_REF.match(ref) if isinstance(ref, str) else None
    return f"Medication/{m.group(1)}" if m else None


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


# Discovery extension on a pathway service: the ids of the services whose cards it already returns. A client
# calling "every service for the hook" skips those, so no card is shown twice.
PATHWAY_OF_EXTENSION = "org.example.gl.pathway-of"
# Basic.code system of the CDS server's feedback records in its FHIR database (cards sent are in a plain table).
RECORD_SYSTEM = "http://example.org/fhir/gl-treatment/cds-record"
_EXT = "http://example.org/fhir/gl-treatment/StructureDefinition/cds-"


def services_for_hook(services: list[dict[str, Any]], hook: str) -> list[str]:
    """The ids to call for `hook`: every service for it, but none a listed pathway service already covers."""
    covered = {
        sid
        for s in services
        for sid in ((s.get("extension") or {}).get(PATHWAY_OF_EXTENSION) or [])
        if s.get("hook") == hook
    }
    return [s["id"] for s in services if s["hook"] == hook and s["id"] not in covered]


def find_suggestion(responses: dict[str, Any], suggestion: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(service id, card, suggestion) of the suggestion with that uuid in `cds call --json` output."""
    for service, resp in responses.items():
        for card in (resp or {}).get("cards") or []:
            for s in card.get("suggestions") or []:
                if s.get("uuid") == suggestion:
                    return service, card, s
    raise UsageError(f"no suggestion with uuid {suggestion} in the saved response; use a uuid from its cards")


def feedback_url(client: Client, service: str) -> str:
    """POST target for feedback on `service`'s cards (CDS Hooks 2.0)."""
    return f"{cds_base_for(client.base_url)}/{service}/feedback"


def send_feedback(client: Client, service: str, items: list[dict[str, Any]]) -> None:
    """POST CDS Hooks 2.0 feedback for `service`; a refusal raises with the server's reason."""
    client.post_json(feedback_url(client, service), {"feedback": items}, content_type="application/json", ok=(200,))


def accept_suggestion(
    client: Client, ehr: Client, service: str, card: dict[str, Any], suggestion: dict[str, Any]
) -> list[str]:
    """Do what a clinician accepting the suggestion does: create its draft resources on the EHR, then tell the service.

    Returns the EHR references created ("ServiceRequest/123"). Only `create` actions are supported.
    """
    created: list[str] = []
    for action in suggestion.get("actions") or []:
        resource = action.get("resource")
        if action.get("type") != "create" or not isinstance(resource, dict) or "resourceType" not in resource:
            raise ServerRejectedError(
                f"suggestion {suggestion.get('uuid')}: only 'create' actions with a resource are supported"
            )
        made = ehr.post_json(resource["resourceType"], resource, ok=(200, 201))
        created.append(f"{resource['resourceType']}/{(made or {}).get('id', '?')}")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    send_feedback(
        client,
        service,
        [
            {
                "card": card["uuid"],
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": suggestion["uuid"]}],
                "outcomeTimestamp": now,
            }
        ],
    )
    return created


def _ext(resource: dict[str, Any], name: str) -> list[Any]:
    """Values of the server record's extension `name` (value[x], whatever its type)."""
    out = []
    for e in resource.get("extension") or []:
        if e.get("url") == _EXT + name:
            out += [v for k, v in e.items() if k.startswith("value")]
    return out


def feedback_counts(client: Client) -> dict[str, dict[str, Any]]:
    """Feedback the CDS server stored (its FHIR Basic records), counted per service: accepted, and overridden by reason.

    Reasons are codes ("patient-declined"); overrides without a reason count under "(no reason)".
    """
    counts: dict[str, dict[str, Any]] = {}
    url: str | None = fhir_base_for(client.base_url) + "/Basic"
    params: dict[str, str] | None = {"code": f"{RECORD_SYSTEM}|feedback", "_count": "500"}
    while url:
        bundle = client.get_json(url, params=params)
        params = None  # the next link carries them
        for entry in bundle.get("entry") or []:
            r = entry.get("resource") or {}
            service = next(iter(_ext(r, "service")), "?")
            outcome = next(iter(_ext(r, "outcome")), "?")
            per = counts.setdefault(service, {"accepted": 0, "overridden": 0, "reasons": {}})
            per[outcome] = per.get(outcome, 0) + 1
            if outcome == "overridden":
                reason = next((c.get("code") for c in _ext(r, "override-reason") if isinstance(c, dict)), "(no reason)")
                per["reasons"][reason] = per["reasons"].get(reason, 0) + 1
        url = next((link.get("url") for link in bundle.get("link") or [] if link.get("relation") == "next"), None)
    return dict(sorted(counts.items()))
