"""`guideline load-patients`: patient Bundles onto a server, optionally date-rolled."""

from __future__ import annotations

import argparse
from pathlib import Path

from guideline.cli import common
from guideline.core.errors import UsageError
from guideline.evaluation.bundles import load_patient_bundle
from guideline.remote.patients import days_until, load_patient, roll_dates


def define_parser(parser: argparse.ArgumentParser) -> None:
    """Add this subcommand's flags to `parser`: the Bundle files, the server flags, --roll-from."""
    parser.add_argument(
        "bundles",
        nargs="+",
        type=Path,
        metavar="BUNDLE",
        help="patient Bundle files (collection, batch or transaction; one Patient each)",
    )
    common.add_server_args(parser, required=True)
    parser.add_argument(
        "--roll-from",
        default=None,
        metavar="DATE",
        help="the date the data was written for (e.g. a test case's evaluation date): every "
        "date is moved by whole days so that DATE becomes today, as servers evaluate "
        "on their own clock",
    )


def main(args: argparse.Namespace) -> int:
    """Check every BUNDLE, then load each in one transaction; nothing is sent if any file is unusable."""
    folders = [p for p in args.bundles if p.is_dir()]
    if folders:
        raise UsageError(
            f"{folders[0]}: a folder; load-patients takes patient Bundle files, e.g. {folders[0] / '*.json'}"
        )
    days = days_until(args.roll_from) if args.roll_from else 0
    loaded = [load_patient_bundle(p) for p in args.bundles]  # every file checked before any write
    with common.client_from_args(args) as client:
        for (bundle, pid), path in zip(loaded, args.bundles, strict=True):
            load_patient(client, roll_dates(bundle, days, args.roll_from))
            print(
                f"loaded Patient/{pid} ({len(bundle.get('entry', []))} resources) from {path}"
                + (f", dates moved {days:+d} days" if days else "")
            )
    return 0
