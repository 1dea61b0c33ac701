"""`guideline conformance`: run the scenarios against any CPG ($apply) / CDS Hooks server and report agreement."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack
from pathlib import Path

from guideline.cli import common
from guideline.content.cql import shared_engine
from guideline.content.package import build_package
from guideline.core.config import load_config
from guideline.core.errors import ExitCode, UsageError
from guideline.evaluation.community import Case, read_cases
from guideline.evaluation.population import atomic_output
from guideline.remote.conformance import (
    AGREE,
    CHANNELS,
    NOT_SUPPORTED,
    CaseResult,
    Channels,
    Report,
    recommendation_plans,
    run_conformance,
)
from guideline.remote.http import Client, Timeouts, read_token

# Short forms for the table; the JSON report keeps the full words.
_SHORT = {AGREE: "agree", NOT_SUPPORTED: "n/s"}


def define_parser(parser: argparse.ArgumentParser) -> None:
    """Add this subcommand's flags: server flags, --cds, --keep, --json, --report, --cases, --case."""
    common.add_server_args(parser, required=True)
    parser.add_argument(
        "--cds",
        metavar="URL",
        default=None,
        help="CDS Hooks base URL (the discovery endpoint, e.g. http://127.0.0.1:8080/cds-services); "
        "default: none, so the CDS channel is reported as not supported",
    )
    parser.add_argument("--keep", action="store_true", help="leave the loaded patients on the server (default: delete)")
    common.add_json_flag(parser, "print the JSON report on stdout instead of the table")
    parser.add_argument("--report", type=Path, default=None, metavar="FILE", help="also write the JSON report to FILE")
    parser.add_argument(
        "--cases", type=Path, default=None, metavar="DIR", help="scenario folders (default: tests/cases in the project)"
    )
    parser.add_argument(
        "--case", action="append", default=None, metavar="NAME", help="run only this scenario (repeatable)"
    )


def _select(cases: list[Case], names: list[str] | None) -> list[Case]:
    if not names:
        return cases
    known = {c.name: c for c in cases}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"no scenario named {', '.join(unknown)}; see the folders under --cases")
    return [known[n] for n in names]


def table(report: Report) -> str:
    """The agreement table: one row per scenario, one column per channel, then the totals."""
    width = max([len("scenario"), *(len(r.case) for r in report.results)])
    lines = [f"{'scenario':<{width}}  " + "  ".join(f"{ch:<13}" for ch in CHANNELS)]
    for r in report.results:
        lines.append(
            f"{r.case:<{width}}  "
            + "  ".join(f"{_SHORT.get(r.cells[ch].status, r.cells[ch].status):<13}" for ch in CHANNELS)
        )
    return "\n".join(lines)


def _progress(result: CaseResult) -> None:
    cells = ", ".join(f"{ch} {c.status}" for ch, c in result.cells.items())
    print(f"  {result.case}: {cells}", file=sys.stderr)


def _summary(report: Report) -> str:
    bad = report.disagreements()
    if bad:
        return f"{len(bad)} disagreement(s): " + ", ".join(f"{case} ({ch})" for case, ch in bad)
    return "full agreement" if report.agreed() else "no channel supported: nothing was compared"


def main(args: argparse.Namespace) -> int:
    """Run, print the table (or JSON), write --report, and exit 0 only at full agreement (else 9)."""
    config = load_config()
    cases = _select(read_cases(args.cases or config.cases_dir), args.case)
    token = read_token(args.token_file)
    engine = shared_engine()
    pkg = build_package(config, engine)
    timeouts = Timeouts(read_s=args.timeout)
    with ExitStack() as stack:
        fhir = stack.enter_context(Client(args.server, token=token, verify_tls=not args.insecure, timeouts=timeouts))
        cds = None
        if args.cds:
            cds = stack.enter_context(Client(args.cds, token=token, verify_tls=not args.insecure, timeouts=timeouts))
        channels = Channels(fhir, cds, recommendation_plans(pkg), None, token)
        report = run_conformance(channels, pkg, cases, keep=args.keep, progress=None if args.json else _progress)
    doc = report.to_json()
    if args.report is not None:
        with atomic_output(args.report) as f:
            f.write(json.dumps(doc, indent=1) + "\n")
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        print(table(report))
        support = "; ".join(f"{k} {v}" for k, v in report.support.items())
        print(f"publish: {doc['publish']['status']}; channels: {support}")
        print(f"cleanup: {report.cleanup}")
        print(_summary(report))
    return ExitCode.OK if report.agreed() else ExitCode.DISAGREEMENT
