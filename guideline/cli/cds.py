"""`guideline cds`: the EHR-side CDS Hooks client (discovery and calls)."""

from __future__ import annotations

import argparse
import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from guideline.cli import cds_auth, common
from guideline.remote.capability import CDS_PREFETCH, check_server
from guideline.remote.cds import CHANNELS, DEFAULT_USER, call, discover, fhir_base_for
from guideline.remote.http import Client, Timeouts, read_token


def render_card(card: dict[str, Any]) -> str:
    """One CDS Hooks card as text: indicator and summary, then indented detail, source, suggestions and links."""
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
    """Add this subcommand's flags to `parser`: `services` and `call`, each with the server flags and --json."""
    sub = parser.add_subparsers(dest="cds_command", metavar="ACTION", required=True)
    services = sub.add_parser("services", help="list the CDS services (discovery)")
    common.add_server_args(services, required=True)
    common.add_json_flag(services)
    c = sub.add_parser("call", help="call one service (or every service for the hook) for a patient")
    common.add_server_args(c, required=True)
    c.add_argument("--service", default=None, metavar="ID", help="service id (default: every service for the hook)")
    c.add_argument("--hook", default="patient-view", metavar="HOOK", help="the hook to call (default patient-view)")
    c.add_argument("--patient", required=True, metavar="ID", help="Patient id on the FHIR server")
    c.add_argument(
        "--user", default=DEFAULT_USER, metavar="REF", help=f"the hook's userId context (default {DEFAULT_USER})"
    )
    c.add_argument("--prefetch", action="store_true", help="send the prefetch each service asks for")
    c.add_argument(
        "--channel",
        choices=CHANNELS,
        default=None,
        help="how the patient's data reaches the service: server (fhirServer = the CDS server's FHIR endpoint), "
        "prefetch, fhir (fhirServer + fhirAuthorization), both, partial (Patient prefetch only + fhirServer), "
        "null (other prefetch keys null + fhirServer); default server, or both with --prefetch",
    )
    c.add_argument("--ehr", default=None, metavar="URL", help="the EHR's FHIR server holding the patient")
    c.add_argument(
        "--ehr-token-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="bearer token of the EHR's FHIR server, sent to it and as fhirAuthorization (never printed)",
    )
    c.add_argument("--only-cards", action="store_true", help="list only services that returned cards")
    cds_auth.add_jwt_args(c)
    common.add_json_flag(c)
    cds_auth.define_keygen(sub)


def main(args: argparse.Namespace) -> int:
    """List the CDS services, or call them for a patient and print their cards (or make a JWT key pair)."""
    if args.cds_command == "keygen":
        return cds_auth.keygen_main(args)
    with common.client_from_args(args, fhir_base_for(args.server)) as client:
        if args.cds_command == "services":
            services = discover(client)
            if args.json:
                print(json.dumps({"services": services}, indent=2))
            else:
                for s in services:
                    print(f"{s['id']:<28} {s['hook']:<14} {s.get('title', '')}")
            return 0
        cds_auth.apply_jwt(args, client)
        with ExitStack() as stack:
            data, token = client, None
            if args.ehr:
                token = read_token(args.ehr_token_file) if args.ehr_token_file else None
                data = stack.enter_context(
                    Client(args.ehr, token=token, verify_tls=not args.insecure, timeouts=Timeouts(read_s=args.timeout))
                )
            channel = args.channel or ("both" if args.prefetch else ("fhir" if args.ehr else "server"))
            if channel != "server" and channel != "fhir":
                # Prefetch is read from the FHIR server as an EHR would: check it once for the whole run.
                check_server(data, CDS_PREFETCH)
            ids = [args.service] if args.service else [s["id"] for s in discover(client) if s["hook"] == args.hook]
            results = {
                sid: call(
                    client,
                    sid,
                    hook=args.hook,
                    patient=args.patient,
                    user=args.user,
                    channel=channel,
                    data=data,
                    data_token=token,
                )
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
