"""`guideline apply`: PlanDefinition/$apply on a server, reported in the `recommend` shape."""

from __future__ import annotations

import argparse
import json
import sys

from guideline.cli import common
from guideline.core.config import load_config
from guideline.remote.apply import apply_patient
from guideline.remote.capability import APPLY, check_server


def define_parser(parser: argparse.ArgumentParser) -> None:
    """Add this subcommand's flags to `parser`: --server flags, --patient, --pathway, --at, --json."""
    common.add_server_args(parser, required=True)
    parser.add_argument("--patient", required=True, metavar="ID", help="Patient id on the server")
    parser.add_argument(
        "--pathway",
        default=None,
        metavar="ID",
        help="pathway PlanDefinition id (default: the package's, from guideline.toml)",
    )
    common.add_at_flag(parser, default="the server's clock")
    common.add_json_flag(parser)


def main(args: argparse.Namespace) -> int:
    """Run $apply on the server for one patient and print the recommendations."""
    pathway = args.pathway or load_config().package.pathway
    with common.client_from_args(args) as client:
        # Once per run, so a server without $apply fails with what it lacks, not a bare HTTP 404.
        check_server(client, APPLY)
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
