"""`guideline validate`: all layers over sources, dist/, a bundle or a package."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from guideline.cli import common
from guideline.core.errors import BadInputError, UsageError
from guideline.remote.http import Client
from guideline.remote.server_validation import server_check
from guideline.validation.run import validate


def define_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path",
        nargs="?",
        type=Path,
        default=None,
        metavar="PATH",
        help="dist/ folder, bundle .json, package .tgz or project folder "
        "(default: the project's sources, built in memory)",
    )
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text (grouped by file) or json (one FHIR OperationOutcome)",
    )
    common.add_server_args(parser, required=False)


def main(args: argparse.Namespace) -> int:
    client: Client | None = None
    if args.server:
        client = common.client_from_args(args)
    try:
        report = validate(args.path, server_check=server_check(client) if client is not None else None)
    except BadInputError as e:
        # An unreadable project config is a usage problem of this command (wrong folder).
        raise UsageError(e.message, e.details) from None
    finally:
        if client is not None:
            client.session.close()
    if args.format == "json":
        sys.stdout.write(json.dumps(report.operation_outcome(), indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(report.render_text() + "\n")
    return report.exit_code
