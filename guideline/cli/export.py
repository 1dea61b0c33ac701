"""`guideline export`: a FHIR Bulk Data export of only what the logic reads, into a folder population mode reads."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from guideline.cli import common
from guideline.content.package import build_package
from guideline.core.config import load_config
from guideline.remote.bulk_export import (
    ExportRequest,
    PollPolicy,
    check_out,
    export_query,
    package_requirements,
    run_export,
)


def define_parser(parser: argparse.ArgumentParser) -> None:
    """Add this subcommand's flags: the server flags, --group | --patient, --out, --since, the polling bounds."""
    common.add_server_args(parser, required=True)
    level = parser.add_mutually_exclusive_group()
    level.add_argument("--group", metavar="ID", default=None, help="export the members of Group/ID (Group/ID/$export)")
    level.add_argument(
        "--patient",
        metavar="ID",
        action="append",
        default=None,
        help="export these patients (Patient/$export with `patient`; repeatable); neither flag: the whole server "
        "($export)",
    )
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="DIR",
        help="the export folder: new or empty, or an unfinished export of the same flags (resumed)",
    )
    parser.add_argument(
        "--since",
        type=common.parse_at,
        default=None,
        metavar="INSTANT",
        help="only resources changed since then (_since): a date (00:00 UTC) or a date-time with UTC offset",
    )
    parser.add_argument(
        "--max-wait",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="give up polling after this long (default 3600; rerunning the command resumes the same export)",
    )
    parser.add_argument(
        "--max-poll-interval",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="the longest wait between polls; a shorter Retry-After from the server is honoured (default 30)",
    )


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(args: argparse.Namespace) -> int:
    """Build the package, derive _type/_typeFilter from its data requirements, export, report on stdout."""
    check_out(args.out)  # before the package build: a wrong folder fails at once
    pkg = build_package(load_config())
    query = export_query(package_requirements(pkg.resources), pkg.value_sets)
    request = ExportRequest(query, group=args.group, patients=tuple(args.patient or ()), since=args.since)
    _progress(f"export: _type={','.join(request.types)}")
    for f in query.type_filters:
        _progress(f"export: _typeFilter={f}")
    policy = PollPolicy(max_wait_s=args.max_wait, max_interval_s=args.max_poll_interval)
    with common.client_from_args(args) as client:
        result = run_export(client, request, args.out, policy=policy, progress=_progress)
    counts = ", ".join(f"{t} {n}" for t, n in sorted(result.counts().items())) or "nothing"
    print(
        f"exported {sum(result.counts().values())} resources into {result.folder} ({counts}); "
        f"transactionTime {result.transaction_time}"
    )
    return 0
