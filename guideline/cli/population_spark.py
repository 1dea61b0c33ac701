"""`guideline population-spark`: population mode on Apache Spark (embedded `local[*]`, or a cluster)."""

from __future__ import annotations

import argparse
import resource
import sys
import time

from guideline.cli import common
from guideline.content.cql import shared_engine
from guideline.content.package import build_package
from guideline.core.config import load_config
from guideline.core.errors import BadInputError, ExitCode
from guideline.core.evaltime import now_utc
from guideline.evaluation import spark as job
from guideline.evaluation.bulk import EXPECTED_BULK
from guideline.evaluation.jvm import batch_classpath


def define_parser(parser: argparse.ArgumentParser) -> None:
    """Add this subcommand's flags: EXPORT, --out, --master, --partitions, --at, --read-all, --keep-going."""
    parser.add_argument(
        "export",
        metavar="EXPORT",
        help="a Bulk Data export folder (one NDJSON file per resource type, plain or .ndjson.gz, optional manifest), "
        "or a URI Spark reads (hdfs://…, s3a://…: every *.ndjson and *.ndjson.gz in it)",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help=f"results folder, written atomically: {job.NDJSON_DIR}/ (the `recommend --json` lines, NDJSON parts) "
        f"and {job.PARQUET_DIR}/ (patient, evaluatedAt, recommendations, document); an earlier result is replaced",
    )
    parser.add_argument(
        "--master",
        default=None,
        metavar="URL",
        help="Spark master (default: the one spark-submit passes, else embedded local[*])",
    )
    parser.add_argument(
        "--partitions",
        type=common.positive_int,
        default=None,
        metavar="N",
        help="patient partitions evaluated in parallel (default: Spark's default parallelism)",
    )
    parser.add_argument(
        "--read-all",
        action="store_true",
        help="parse every resource of the export (the push-down off): by default lines of types and codes no "
        "retrieve of the package reads are dropped as they are read, before the shuffle",
    )
    parser.add_argument(
        "--keep-going",
        action="store_true",
        help="exit 0 even if bad records were skipped (they are still reported)",
    )
    common.add_at_flag(parser, default="now (this machine's clock)")


def main(args: argparse.Namespace) -> int:
    """Run the job; skipped records, then a summary, on stderr; exit 7 if any record was skipped."""
    job.check_output(args.out)
    files = job.export_files(args.export)  # bad input fails before the slow start
    job.require_pyspark()
    batch_classpath()  # the evaluator must be built (a ToolchainError naming set-up otherwise)
    at = args.at or now_utc()
    start = time.monotonic()
    pkg = build_package(load_config(), shared_engine())
    spark = job.spark_session(args.master)
    try:
        partitions = args.partitions or spark.sparkContext.defaultParallelism
        ready = time.monotonic()
        summary = job.run_job(spark, pkg, files, at, args.out, partitions, read_all=args.read_all)
        master = str(spark.sparkContext.master)
    finally:
        spark.stop()
    return _finish(args, summary, master, time.monotonic() - ready, ready - start)


def _finish(args: argparse.Namespace, summary: job.JobSummary, master: str, elapsed: float, startup: float) -> int:
    if summary.records == 0:
        raise BadInputError(f"{args.export}: the export holds no patient; expected {EXPECTED_BULK}")
    err = sys.stderr
    for where, error in summary.skipped:
        err.write(f"skipped: {where}: {error}\n")
    rate = summary.evaluated / elapsed if elapsed > 0 else 0.0
    err.write(
        f"population: {summary.records:,} records from {args.export}: {summary.evaluated:,} evaluated, "
        f"{len(summary.skipped):,} skipped; {elapsed:.1f} s in Spark {master} ({rate:,.0f} patients/s, "
        f"{summary.partitions} partitions) after {startup:.1f} s start-up; results in {args.out}\n"
    )
    own_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    err.write(f"memory: peak RSS {own_peak} MiB (driver's Python)\n")
    if summary.fired:
        err.write(f"fired: {'; '.join(f'{k} {v:,}' for k, v in sorted(summary.fired.items()))}\n")
    if summary.skipped and not args.keep_going:
        err.write(
            f"error: {len(summary.skipped):,} bad record(s) in {args.export} skipped (listed above); "
            "fix them or pass --keep-going\n"
        )
        return ExitCode.BAD_INPUT
    return 0
