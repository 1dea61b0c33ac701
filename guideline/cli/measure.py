"""`guideline measure`: the indicator Measures over a population (local engine) or on a server ($evaluate-measure)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from guideline.cli import common
from guideline.cli.recommend import PackageOnce, check_results_file, population_engines
from guideline.content.package import build_package
from guideline.core.config import load_config
from guideline.core.errors import ExitCode, UsageError
from guideline.core.evaltime import now_utc
from guideline.evaluation import measures as m
from guideline.evaluation import population as popmod
from guideline.evaluation.pushdown import Reads
from guideline.evaluation.records import open_population
from guideline.remote.measure import evaluate_on_server
from guideline.render.indicators import render_report


def define_parser(parser: argparse.ArgumentParser) -> None:
    """Add this subcommand's flags: --population or --server, --period, --out, --subject-list, --html, engine flags."""
    parser.add_argument(
        "--population",
        type=Path,
        metavar="PATH",
        help="evaluate locally over a population, any input `recommend --population` reads: a directory of patient "
        "Bundles, an NDJSON file grouped by patient (or *.ndjson.gz), or a Bulk Data export folder",
    )
    common.add_server_args(parser, required=False)
    parser.add_argument(
        "--period",
        required=True,
        type=_period,
        metavar="START/END",
        help="the measurement period, ISO dates with both ends included, e.g. 2026-01-01/2026-12-31; GLCommon's "
        '"Evaluation Time" is the end of its last day (23:59:59Z)',
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the MeasureReports (a collection Bundle, one summary report per indicator) to FILE, atomically "
        "(default: stdout)",
    )
    parser.add_argument(
        "--subject-list",
        action="store_true",
        help="add per-patient membership: each population's patients as a contained List (--population only)",
    )
    parser.add_argument(
        "--html",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write an offline HTML page with one bar chart per indicator",
    )
    local = parser.add_argument_group("local evaluation (--population)")
    local.add_argument(
        "--engine",
        choices=("java", "js"),
        default=None,
        help="java (default): the Java CQL engine HAPI runs; js: the Node workers (cql-execution)",
    )
    local.add_argument(
        "--workers",
        type=common.positive_int,
        default=None,
        metavar="N",
        help=f"JVM threads (--engine java) or Node workers (--engine js); default: the number of CPUs, here "
        f"{os.cpu_count() or 1}",
    )
    local.add_argument(
        "--keep-going", action="store_true", help="exit 0 even if bad records were skipped (they are still reported)"
    )


def _period(text: str) -> m.Period:
    try:
        return m.parse_period(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix(f"--period '{text}': ")) from None


def main(args: argparse.Namespace) -> int:
    """Evaluate every indicator (locally or on --server) and write the summary MeasureReports."""
    if (args.population is None) == (args.server is None):
        raise UsageError("give one of --population PATH (evaluate locally) or --server URL ($evaluate-measure)")
    if args.server is not None:
        local_only = [f for f, v in (("--engine", args.engine), ("--workers", args.workers)) if v is not None]
        local_only += [f for f, v in (("--subject-list", args.subject_list), ("--keep-going", args.keep_going)) if v]
        if local_only:
            raise UsageError(f"{', '.join(local_only)} only apply with --population")
    for target in (args.out, args.html):
        if target is not None:
            check_results_file(target, args.population or Path(os.devnull))
    if args.population is not None:
        reports, measures, code = _local(args)
    else:
        reports, measures, code = _server(args)
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in reports]}
    text = json.dumps(bundle, indent=2, ensure_ascii=False) + "\n"
    if args.out is not None:
        with popmod.atomic_output(args.out) as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    if args.html is not None:
        # The page is the render stage's (guideline.render.indicators); this command only hands it the reports.
        page = render_report(reports, measures)
        with popmod.atomic_output(args.html) as f:
            f.write(page)
    for r in reports:
        sys.stderr.write(_summary_line(r) + "\n")
    return code


def _local(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """Every indicator over --population on the chosen engine; skipped records on stderr (BAD_INPUT unless asked)."""
    package = PackageOnce()
    workers = args.workers or os.cpu_count() or 1
    skipped = 0
    start = time.monotonic()
    with (
        open_population(args.population, lambda: Reads.of(package.get())) as population,
        population_engines(args.engine or "java", workers, package, read_all=False) as (pkg, pool),
    ):
        defs = m.measure_defs(pkg)
        # Counted as the results stream in: memory stays flat unless --subject-list keeps the patient ids.
        tallies = [m.Tally(d, keep_members=args.subject_list) for d in defs]
        evaluated = 0
        for record, values, error in m.evaluate_records(pkg, population.records(), args.period, pool):
            if values is None:
                skipped += 1
                sys.stderr.write(f"skipped: {record.where}: {error}\n")
                continue
            evaluated += 1
            for t in tallies:
                t.add(str(record.patient), values.get(t.measure.library) or {})
    date = now_utc()
    reports = [m.summary_report(t, args.period, date=date, subject_list=args.subject_list) for t in tallies]
    sys.stderr.write(
        f"measure: {evaluated:,} patients from {args.population} evaluated for {len(defs)} indicators in "
        f"{time.monotonic() - start:.1f} s, {skipped:,} skipped\n"
    )
    if skipped and not args.keep_going:
        sys.stderr.write(f"error: {skipped:,} bad record(s) skipped (listed above); fix them or pass --keep-going\n")
        return reports, [d.resource for d in defs], ExitCode.BAD_INPUT
    return reports, [d.resource for d in defs], 0


def _server(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """Every indicator by the server's Measure/$evaluate-measure, reshaped as the local reports."""
    pkg = build_package(load_config())
    defs = m.measure_defs(pkg)
    with common.client_from_args(args) as client:
        results = evaluate_on_server(client, defs, args.period)
    date = now_utc()
    reports = [m.summary_report(t, args.period, date=date) for t, _ in results]
    return reports, [d.resource for d in defs], 0


def _summary_line(report: dict[str, Any]) -> str:
    """`<measure>: numerator/denominator = score` for stderr."""
    group = report["group"][0]
    counts = {p["code"]["coding"][0]["code"]: p["count"] for p in group["population"]}
    score = group.get("measureScore", {}).get("value")
    shown = "no score (empty denominator)" if score is None else f"{score:.3f}"
    name = str(report["measure"]).rsplit("/", 1)[-1].split("|", 1)[0]
    return f"{name}: {counts['numerator']:,}/{counts['denominator']:,} = {shown}"
