"""`guideline publish`: validate, compare and write the package in one transaction."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from guideline.cli import common
from guideline.remote.publish import load_resources, publish_resources


def define_parser(parser: argparse.ArgumentParser) -> None:
    """Add this subcommand's flags to `parser`: the optional bundle, the server flags, --dry-run, --force, --json."""
    parser.add_argument(
        "bundle",
        nargs="?",
        type=Path,
        default=None,
        metavar="BUNDLE",
        help="a built dist/bundle.json (default: build and validate the sources now)",
    )
    common.add_server_args(parser, required=True)
    parser.add_argument("--dry-run", action="store_true", help="compare only; write nothing")
    parser.add_argument(
        "--force",
        action="store_true",
        help="overwrite resources whose url|version exists with different content",
    )
    common.add_json_flag(parser)


def main(args: argparse.Namespace) -> int:
    """Publish the package (or a built bundle) and print what happened to each resource."""
    resources = load_resources(args.bundle)
    with common.client_from_args(args) as client:
        result = publish_resources(client, resources, dry_run=args.dry_run, force=args.force)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    width = max((len(o.key) for o in result.outcomes), default=10)
    for o in result.outcomes:
        print(f"{o.action:<9} {o.key:<{width}} {o.version or ''}  {o.detail}".rstrip())
    counts = result.counts()
    summary = ", ".join(f"{n} {a}" for a, n in sorted(counts.items()))
    verb = "would write" if result.dry_run else "wrote"
    n = sum(v for k, v in counts.items() if k in ("created", "updated", "forced"))
    print(
        f"{summary}; {verb} {n if result.dry_run else result.writes} resource(s) "
        f"{'(dry run)' if result.dry_run else 'in one transaction'} to {result.server}"
    )
    return 0
