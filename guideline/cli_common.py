"""Flags shared by the server-facing subcommands, defined once so they read the same everywhere."""

from __future__ import annotations

import argparse
from pathlib import Path

from .http import Client, Timeouts, read_token


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
