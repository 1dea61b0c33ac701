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
    """Add this subcommand's flags to `parser`: optional path, --json (hidden: --format), optional server flags."""
    parser.add_argument(
        "path",
        nargs="?",
        type=Path,
        default=None,
        metavar="PATH",
        help="dist/ folder, bundle .json, package .tgz or project folder "
        "(default: the project's sources, built in memory)",
    )
    common.add_json_flag(parser, "print one FHIR OperationOutcome as JSON (default: text grouped by file)")
    common.add_format_alias(parser)
    common.add_server_args(parser, required=False)


def main(args: argparse.Namespace) -> int:
    """Validate, print the report on stdout (text or JSON) and, if it failed, one `error:` line on stderr."""
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
    if args.json:
        sys.stdout.write(json.dumps(report.operation_outcome(), indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(report.render_text() + "\n")
    if report.errors:
        # The verdict on stderr too: stdout may be JSON for a tool, or scrolled past on a terminal.
        n = len(report.errors)
        print(
            f"error: {args.path or report.target}: {n} validation error{'s' if n != 1 else ''} (see the report); "
            "fix them and validate again",
            file=sys.stderr,
        )
    return report.exit_code
