"""`guideline cds`: the EHR-side CDS Hooks client (discovery, calls, accepting a suggestion, feedback counts)."""

from __future__ import annotations

import argparse
import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from guideline.cli import cds_auth, common
from guideline.core.errors import BadInputError
from guideline.remote.capability import CDS_PREFETCH, check_server
from guideline.remote.cds import (
    CHANNELS,
    DEFAULT_USER,
    accept_suggestion,
    call,
    discover,
    feedback_counts,
    fhir_base_for,
    find_suggestion,
    services_for_hook,
)
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
        lines.append(f"    suggestion: {s.get('label', '')} (uuid {s.get('uuid', '?')})")
    for link in card.get("links") or []:
        lines.append(f"    link: {link.get('label', '')} <{link.get('url', '')}>")
    return "\n".join(lines)


def define_parser(parser: argparse.ArgumentParser) -> None:
    """Add this subcommand's flags to `parser`: `services` and `call`, each with the server flags and --json."""
    sub = parser.add_subparsers(dest="cds_command", metavar="ACTION", required=True)
    services = sub.add_parser("services", help="list the CDS services (discovery)")
    common.add_server_args(services, required=True)
    common.add_json_flag(services)
    c = sub.add_parser(
        "call", help="call one service (default: every service for the hook a pathway service does not cover)"
    )
    common.add_server_args(c, required=True)
    c.add_argument(
        "--service",
        default=None,
        metavar="ID",
        help="service id (default: every service for the hook, skipping those a listed pathway service covers)",
    )
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
    a = sub.add_parser("accept", help="accept a suggestion: create its draft on the EHR, then send feedback")
    common.add_server_args(a, required=True)
    a.add_argument("--response", type=Path, required=True, metavar="FILE", help="saved `cds call --json` output")
    a.add_argument("--suggestion", required=True, metavar="UUID", help="uuid of the suggestion to accept")
    a.add_argument("--ehr", required=True, metavar="URL", help="the EHR's FHIR server to create the draft on")
    a.add_argument(
        "--ehr-token-file", type=Path, default=None, metavar="FILE", help="bearer token of the EHR's FHIR server"
    )
    cds_auth.add_jwt_args(a)
    common.add_json_flag(a)
    f = sub.add_parser("feedback", help="feedback the CDS server stored: counts per service, outcome and reason")
    common.add_server_args(f, required=True)
    common.add_json_flag(f)
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
        if args.cds_command == "feedback":
            return _print_feedback(feedback_counts(client), args.json)
        # Both accept (its feedback POST) and call reach the services: sign them when asked.
        cds_auth.apply_jwt(args, client)
        if args.cds_command == "accept":
            return _accept(client, args)
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
            ids = [args.service] if args.service else services_for_hook(discover(client), args.hook)
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


def _accept(client: Client, args: argparse.Namespace) -> int:
    """Accept one suggestion of a saved response: its draft created on the EHR, then `accepted` feedback."""
    try:
        responses = json.loads(args.response.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BadInputError(f"{args.response}: cannot read a saved `cds call --json` output ({e})") from None
    if not isinstance(responses, dict):
        raise BadInputError(f"{args.response}: not a `cds call --json` output (an object of service id -> response)")
    service, card, suggestion = find_suggestion(responses, args.suggestion)
    token = read_token(args.ehr_token_file) if args.ehr_token_file else None
    with Client(args.ehr, token=token, verify_tls=not args.insecure, timeouts=Timeouts(read_s=args.timeout)) as ehr:
        created = accept_suggestion(client, ehr, service, card, suggestion)
    if args.json:
        print(json.dumps({"service": service, "card": card["uuid"], "created": created}, indent=2))
    else:
        print(f"accepted '{suggestion.get('label', '')}' ({service}): created {', '.join(created)} on {args.ehr}")
        print("feedback sent: accepted")
    return 0


def _print_feedback(counts: dict[str, dict[str, Any]], as_json: bool) -> int:
    """Print feedback counts per service (accepted, overridden with reasons)."""
    if as_json:
        print(json.dumps(counts, indent=2))
        return 0
    if not counts:
        print("no feedback stored")
    for service, c in counts.items():
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(c["reasons"].items()))
        print(
            f"{service:<28} accepted {c['accepted']:>4}  overridden {c['overridden']:>4}"
            + (f" ({reasons})" if reasons else "")
        )
    return 0
