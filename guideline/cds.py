"""An EHR-side CDS Hooks 2.0 client for interoperability testing: discovery, calls, prefetch, cards."""

from __future__ import annotations

import argparse
import json
import re
import uuid
from typing import Any

from . import cli_common
from .errors import ServerRejectedError, UsageError
from .http import Client

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
    """Fill {{context.X}} tokens and read each query from the FHIR server, as an EHR would."""
    out: dict[str, Any] = {}
    for key, template in sorted(templates.items()):

        def fill(m: re.Match[str], key: str = key) -> str:
            name = m.group(1)
            if name not in context:
                raise UsageError(f"prefetch '{key}' needs context.{name}, which this call does not have")
            return context[name]

        query = _TOKEN.sub(fill, template)
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
    """POST a hook call; returns the parsed CDS response (cards checked for shape)."""
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


def render_card(card: dict[str, Any]) -> str:
    lines = [f"[{card.get('indicator', '?')}] {card.get('summary', '')}"]
    if card.get("detail"):
        lines.append(f"    {card['detail']}")
    src = card.get("source") or {}
    if src.get("label"):
        lines.append(f"    source: {src['label']}" + (f" <{src['url']}>" if src.get("url") else ""))
    for s in card.get("suggestions") or []:
        lines.append(f"    suggestion: {s.get('label', '')}")
    for link in card.get("links") or []:
        lines.append(f"    link: {link.get('label', '')} <{link.get('url', '')}>")
    return "\n".join(lines)


def define_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="cds_command", metavar="ACTION", required=True)
    services = sub.add_parser("services", help="list the CDS services (discovery)")
    cli_common.add_server_args(services, required=True)
    cli_common.add_json_flag(services)
    c = sub.add_parser("call", help="call one service (or every service for the hook) for a patient")
    cli_common.add_server_args(c, required=True)
    c.add_argument("--service", default=None, help="service id (default: every service for the hook)")
    c.add_argument("--hook", default="patient-view")
    c.add_argument("--patient", required=True, metavar="ID", help="Patient id on the FHIR server")
    c.add_argument("--user", default=DEFAULT_USER)
    c.add_argument("--prefetch", action="store_true", help="send the prefetch each service asks for")
    c.add_argument("--only-cards", action="store_true", help="list only services that returned cards")
    cli_common.add_json_flag(c)


def main(args: argparse.Namespace) -> int:
    with cli_common.client_from_args(args, fhir_base_for(args.server)) as client:
        if args.cds_command == "services":
            services = discover(client)
            if args.json:
                print(json.dumps({"services": services}, indent=2))
            else:
                for s in services:
                    print(f"{s['id']:<28} {s['hook']:<14} {s.get('title', '')}")
            return 0
        ids = [args.service] if args.service else [s["id"] for s in discover(client) if s["hook"] == args.hook]
        results = {
            sid: call(client, sid, hook=args.hook, patient=args.patient, user=args.user, prefetch=args.prefetch)
            for sid in ids
        }
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    shown = {k: v for k, v in results.items() if v["cards"] or not args.only_cards}
    if not shown:
        print(f"no cards for Patient/{args.patient} from {len(results)} service(s)")
    for sid, resp in shown.items():
        print(f"{sid}: {len(resp['cards'])} card(s)")
        for card in resp["cards"]:
            print("  " + render_card(card).replace("\n", "\n  "))
    return 0
