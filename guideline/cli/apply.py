"""`guideline apply`: PlanDefinition/$apply on a server, reported in the `recommend` shape."""

from __future__ import annotations

import argparse
import json
import sys

from guideline.cli import common
from guideline.cli.common import parse_at
from guideline.core.config import load_config
from guideline.remote.apply import apply_patient


def define_parser(parser: argparse.ArgumentParser) -> None:
    common.add_server_args(parser, required=True)
    parser.add_argument("--patient", required=True, metavar="ID", help="Patient id on the server")
    parser.add_argument(
        "--pathway",
        default=None,
        metavar="ID",
        help="pathway PlanDefinition id (default: the package's, from guideline.toml)",
    )
    parser.add_argument(
        "--at",
        type=parse_at,
        default=None,
        metavar="DATETIME",
        help="evaluate as of this moment (2026-06-01, or a date-time with offset such as "
        '2026-06-01T12:00:00Z), passed as the CQL parameter "Evaluation Time"; default: the '
        "server's clock",
    )
    common.add_json_flag(parser)


def main(args: argparse.Namespace) -> int:
    pathway = args.pathway or load_config().package.pathway
    with common.client_from_args(args) as client:
        doc = apply_patient(client, pathway, args.patient, at=args.at)
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        return 0
    when = f"as of {doc['evaluatedAt']}" if args.at else f"server clock, {doc['evaluatedAt']}"
    print(f"Patient {doc['patient']} on {args.server} ({when}): {len(doc['recommendations'])} recommendation(s)")
    for r in doc["recommendations"]:
        kind = " [informational]" if r["informational"] else ""
        print(f"\n[{r['id']}] {r['title']}{kind}")
        for a in r["activities"]:
            print(f"  -> {a['resourceType']}: {', '.join(a['codes']) or '(no code)'}")
    return 0
