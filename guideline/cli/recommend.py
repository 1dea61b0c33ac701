"""`guideline recommend`: one patient's bundle, or a whole population, evaluated locally."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from guideline.cli import common
from guideline.content.cql import Engine, shared_engine
from guideline.content.package import Package, build_package
from guideline.core.config import load_config
from guideline.core.errors import ExitCode, UsageError
from guideline.core.evaltime import now_utc
from guideline.evaluation import population as popmod
from guideline.evaluation.bundles import load_patient_bundle
from guideline.evaluation.jvm import JavaPool
from guideline.evaluation.model import Recommendation, document
from guideline.evaluation.patient import evaluate
from guideline.evaluation.pushdown import Reads
from guideline.evaluation.records import Population, open_population


def define_parser(parser: argparse.ArgumentParser) -> None:
    """Add this subcommand's flags to `parser`: --patient-bundle or --population (with its options), --at, --json."""
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--patient-bundle",
        type=Path,
        metavar="FILE",
        help="FHIR Bundle (collection, batch or transaction) with exactly one Patient",
    )
    what.add_argument(
        "--population",
        type=Path,
        metavar="PATH",
        help="many patients: a directory of patient Bundles (*.json, in file-name order), an NDJSON file of "
        "resources grouped by patient (or gzipped, *.ndjson.gz), or a Bulk Data export folder (one NDJSON file "
        "per resource type, *.ndjson or *.ndjson.gz); writes one `--json` document per line",
    )
    pop = parser.add_argument_group("population mode")
    pop.add_argument(
        "--workers",
        type=common.positive_int,
        default=None,
        metavar="N",
        help=f"JVM threads (--engine java) or Node worker processes (--engine js); default: the number of CPUs, "
        f"here {os.cpu_count() or 1}",
    )
    pop.add_argument(
        "--engine",
        choices=("java", "js"),
        default=None,
        help="java (default): the Java CQL engine HAPI runs, in one JVM with --workers threads; js: the Node "
        "workers (cql-execution), the reference engine",
    )
    pop.add_argument(
        "--out", type=Path, default=None, metavar="FILE", help="results file, written atomically (default: stdout)"
    )
    pop.add_argument(
        "--read-all",
        action="store_true",
        help="parse every resource of the population (the push-down off): by default NDJSON lines of types and "
        "codes no retrieve of the package reads are skipped unparsed; the results are the same",
    )
    pop.add_argument(
        "--keep-going",
        action="store_true",
        help="exit 0 even if bad records were skipped (they are still reported)",
    )
    common.add_at_flag(parser, default="now (this machine's clock)")
    common.add_json_flag(parser)


def _render_text(doc: dict[str, Any], recs: list[Recommendation]) -> str:
    lines = [
        f"Patient {doc['patient']} at {doc['evaluatedAt']}: {len(recs)} recommendation{'s' if len(recs) != 1 else ''}"
    ]
    for r in recs:
        kind = " [informational]" if r.informational else ""
        lines += ["", f"[{r.id}] {r.title}{kind}", f"  {r.detail}"]
        for a in r.activities:
            lines.append(f"  -> {a.resource_type} {a.definition}: {', '.join(a.codes) or '(no code)'}")
        lines.append(f'  Source: "{r.source}"')
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> int:
    """`recommend --patient-bundle`: one patient's recommendations as text or JSON on stdout."""
    if args.population is not None:
        return population_main(args)
    given = (
        ("--workers", args.workers),
        ("--out", args.out),
        ("--engine", args.engine),
        ("--read-all", args.read_all or None),
    )
    extra = [flag for flag, value in given if value is not None]
    extra += ["--keep-going"] if args.keep_going else []
    if extra:
        raise UsageError(f"{', '.join(extra)} only apply with --population")
    if args.patient_bundle.is_dir():
        raise UsageError(
            f"{args.patient_bundle}: a folder; --patient-bundle takes one Bundle file "
            "(for a folder of patient Bundles use --population)"
        )
    bundle, pid = load_patient_bundle(args.patient_bundle)  # bad input fails before the slow build
    at = args.at or now_utc()
    pkg = build_package(load_config())
    recs = evaluate(pkg, bundle, at, shared_engine())
    doc = document(pid, at, recs)
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(_render_text(doc, recs))
    return 0


def population_main(args: argparse.Namespace) -> int:
    """`recommend --population`: results to --out (or stdout), reports and progress to stderr."""
    if args.out is not None:
        check_results_file(args.out, args.population)
    package = PackageOnce()
    want = None if args.read_all else lambda: Reads.of(package.get())
    # Bad input fails before the slow start; a Bulk export's index asks `want` (the package) once it is checked.
    with open_population(args.population, want) as population:
        bulk = population.bulk
        if bulk is not None:
            skipped = bulk.resources - bulk.kept
            sys.stderr.write(
                f"population: Bulk Data export of {len(bulk.files)} file(s), "
                f"{bulk.resources:,} resources grouped by patient in {bulk.seconds:.1f} s"
                + (f" ({skipped:,} no retrieve can return left out)" if skipped else "")
                + "\n"
            )
        return _run_population(args, population, package)


class PackageOnce:
    """The package, built the first time it is asked for (by the push-down at opening, or by the engines)."""

    def __init__(self) -> None:
        self.pkg: Package | None = None

    def get(self, engine: Engine | None = None) -> Package:
        """The built package; `engine` builds it if it is not built yet (default: the shared Node worker)."""
        if self.pkg is None:
            self.pkg = build_package(load_config(), engine or shared_engine())
        return self.pkg


@contextlib.contextmanager
def population_engines(
    engine: str, workers: int, package: PackageOnce, *, read_all: bool
) -> Iterator[tuple[Package, popmod.Pool]]:
    """The built package and the pool that evaluates it: one JVM with N threads, or N Node workers."""
    config = load_config()
    if engine == "java":
        # The Node toolchain still builds the package (ELM for the walk's plan, value sets); the JVM compiles
        # the same CQL with its own translator.
        pkg = package.get()
        with JavaPool(config, workers, read_all=read_all) as jpool:
            jpool.load(pkg)
            yield pkg, jpool
        return
    with popmod.EnginePool(workers) as pool:
        # The first worker compiles the package (unless the push-down built it), so no extra process is started.
        yield package.get(pool.engines[0]), pool


def _run_population(args: argparse.Namespace, population: Population, package: PackageOnce) -> int:
    """Evaluate an opened population on the chosen engine, results to --out or stdout."""
    at = args.at or now_utc()
    workers = args.workers or os.cpu_count() or 1
    summary = popmod.Summary()
    err = sys.stderr
    tty = err.isatty()
    start = time.monotonic()
    last_draw = 0.0
    with population_engines(args.engine or "java", workers, package, read_all=args.read_all) as (pkg, pool):
        ready = time.monotonic()
        with popmod.atomic_output(args.out) if args.out else contextlib.nullcontext(sys.stdout) as out:
            for result in popmod.evaluate_opened(pkg, population, at, pool):
                summary.add(result)
                if not result.evaluated:
                    if tty:
                        err.write("\r\x1b[K")
                    err.write(f"skipped: {result.record.where}: {result.error}\n")
                else:
                    out.write(popmod.result_line(result))
                now = time.monotonic()
                if tty and now - last_draw >= 0.2:
                    last_draw = now
                    line = popmod.progress_line(
                        summary.records, result.record.progress, population.total, population.unit, now - ready
                    )
                    err.write("\r\x1b[K" + line)
                    err.flush()
        if tty:
            err.write("\r\x1b[K")
        worker_peaks = [st["maxRssKiB"] // 1024 for st in pool.stats()]
    return _finish(args, summary, start, ready, workers, worker_peaks)


def check_results_file(out: Path, population: Path) -> None:
    """--out must name a file to (re)write: not a folder or device, not the input, in an existing folder."""
    if out.is_dir():
        raise UsageError(f"{out}: a folder; --out takes the results file to write, e.g. {out / 'results.ndjson'}")
    if out.exists() and not out.is_file():
        raise UsageError(f"{out}: not a regular file; --out takes a results file (without --out, results go to stdout)")
    if out.exists() and population.exists() and out.resolve() == population.resolve():
        raise UsageError(f"{out}: this is the population itself; write the results to another file")
    if not out.resolve().parent.is_dir():
        raise UsageError(f"{out}: {out.resolve().parent} is not an existing folder; create it or choose another --out")


def _finish(
    args: argparse.Namespace, summary: popmod.Summary, start: float, ready: float, workers: int, peaks: list[int]
) -> int:
    """The run's summary on stderr; BAD_INPUT if records were skipped (unless --keep-going)."""
    err = sys.stderr
    elapsed = time.monotonic() - ready
    rate = summary.evaluated / elapsed if elapsed > 0 else 0.0
    err.write(
        f"population: {summary.records:,} records from {args.population}: {summary.evaluated:,} evaluated, "
        f"{summary.skipped:,} skipped; {elapsed:.1f} s evaluating ({rate:,.0f} patients/s, {workers} workers) "
        f"after {ready - start:.1f} s start-up\n"
    )
    # ru_maxrss is in KiB on Linux.
    own_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    err.write(f"memory: peak RSS {own_peak} MiB (this process), {'/'.join(map(str, peaks))} MiB (workers)\n")
    if summary.fired:
        fired = "; ".join(f"{k} {v:,}" for k, v in sorted(summary.fired.items()))
        err.write(f"fired: {fired}\n")
    if summary.skipped and not args.keep_going:
        err.write(
            f"error: {summary.skipped:,} bad record(s) in {args.population} skipped (listed above); "
            "fix them or pass --keep-going\n"
        )
        return ExitCode.BAD_INPUT
    return 0
