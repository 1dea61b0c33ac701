"""Flags shared by the server-facing subcommands, defined once so they read the same everywhere."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from guideline.core.evaltime import format_datetime
from guideline.remote.http import Client, Timeouts, read_token


def add_server_args(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "--server", required=required, metavar="URL", help="FHIR base URL, e.g. http://127.0.0.1:8080/fhir"
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="file holding a bearer token (default: $GUIDELINE_TOKEN, if set)",
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


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def client_from_args(args: argparse.Namespace, base_url: str | None = None) -> Client:
    return Client(
        base_url or args.server,
        token=read_token(args.token_file),
        verify_tls=not args.insecure,
        timeouts=Timeouts(read_s=args.timeout),
    )


def parse_at(value: str) -> str:
    """The evaluation time as ISO 8601 with an offset; a plain date means 00:00 UTC that day.

    The offset matters: it is the time zone CQL uses for Now(), Today() and ages.
    """
    text = value.strip()
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            return f"{day.isoformat()}T00:00:00Z"
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a date (2026-06-01) or a date-time with offset (2026-06-01T12:00:00Z)"
        ) from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise argparse.ArgumentTypeError(
            f"{value!r} has no UTC offset; add one (e.g. 2026-06-01T12:00:00Z or +02:00) so ages and "
            "lookbacks do not depend on this machine's time zone"
        )
    return format_datetime(when)
