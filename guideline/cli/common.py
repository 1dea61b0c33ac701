"""Flags shared by several subcommands, defined once so they read and parse the same everywhere."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from guideline.core.evaltime import format_datetime, parse_date_time
from guideline.remote.http import TOKEN_ENV, Client, Timeouts, read_token

# How --at is spelled; the same words in every command's help and in the error for a bad value.
AT_FORMS = "a date (2026-06-01, meaning 00:00 UTC) or a date-time with UTC offset (2026-06-01T12:00:00Z, +02:00)"


def add_server_args(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """Add --server, --token-file, --insecure and --timeout: how to reach a FHIR server."""
    parser.add_argument(
        "--server", required=required, metavar="URL", help="FHIR base URL, e.g. http://127.0.0.1:8080/fhir"
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"file holding a bearer token (default: ${TOKEN_ENV}, if set)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="skip TLS certificate verification (only for test servers you trust)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="read timeout per request (default 120; connect timeout is 5)",
    )


def add_json_flag(parser: argparse.ArgumentParser, what: str = "print machine-readable JSON") -> None:
    """Add --json (sets args.json); `what` is its help, for a command whose JSON needs saying more."""
    parser.add_argument("--json", action="store_true", help=what)


class _FormatAlias(argparse.Action):
    """`--format text|json`, the old spelling of --json: still works, says so once, hidden from help."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values == "json")
        instead = "--json" if values == "json" else "nothing (text is the default)"
        # The CLI is the one place that prints; a note on stderr keeps stdout clean for the JSON.
        print(f"{parser.prog}: note: --format {values} is deprecated; use {instead}", file=sys.stderr)


def add_format_alias(parser: argparse.ArgumentParser) -> None:
    """Keep `--format text|json` working as a hidden, deprecated spelling of --json (sets args.json).

    Call after add_json_flag, which sets the default. Any other value is still a usage error (exit 2).
    """
    parser.add_argument(
        "--format",
        dest="json",
        choices=("text", "json"),
        action=_FormatAlias,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )


def parse_at(value: str) -> str:
    """The evaluation time as ISO 8601 with an offset; a plain date means 00:00 UTC that day.

    The offset matters: it is the time zone CQL uses for Now(), Today() and ages. A value without
    one, or not a date at all, is an ArgumentTypeError (argparse turns it into exit 2).
    """
    when = parse_date_time(value.strip())
    if when is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not {AT_FORMS}")
    if not isinstance(when, dt.datetime):
        return f"{when.isoformat()}T00:00:00Z"
    if when.tzinfo is None or when.utcoffset() is None:
        raise argparse.ArgumentTypeError(
            f"{value!r} has no UTC offset; add one (e.g. 2026-06-01T12:00:00Z or +02:00) so ages and "
            "lookbacks do not depend on this machine's time zone"
        )
    return format_datetime(when)


def add_at_flag(parser: argparse.ArgumentParser, *, default: str) -> None:
    """Add --at DATETIME (sets args.at: normalised ISO 8601 with offset, or None).

    `default` says what the evaluation time is without --at, e.g. "now" or "the server's clock".
    """
    parser.add_argument(
        "--at",
        type=parse_at,
        default=None,
        metavar="DATETIME",
        help=f'evaluate as of this moment, {AT_FORMS}, passed as the CQL parameter "Evaluation Time"; '
        f"default: {default}",
    )


def client_from_args(args: argparse.Namespace, base_url: str | None = None) -> Client:
    """The one HTTP client of a run, from the server flags (`base_url` overrides --server)."""
    return Client(
        base_url or args.server,
        token=read_token(args.token_file),
        verify_tls=not args.insecure,
        timeouts=Timeouts(read_s=args.timeout),
    )


def positive_int(value: str) -> int:
    """argparse type for counts (workers, partitions, batch sizes): a whole number of at least 1."""
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of at least 1")
    return n
