"""`guideline export-tests`: the scenarios in the CQL community's test layout (input/tests/library/...)."""

from __future__ import annotations

import argparse
from pathlib import Path

from guideline.content.cql import shared_engine
from guideline.content.package import build_package
from guideline.core.config import load_config
from guideline.core.fsutil import check_out_dir
from guideline.evaluation.community import MANIFEST, export_layout, read_cases


def define_parser(parser: argparse.ArgumentParser) -> None:
    """Add this subcommand's flags to `parser`: --out, --cases."""
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help=f"folder to write input/tests/library/<Library>/<case>/ (plus input/cql, input/vocabulary and "
        f"{MANIFEST}) into; must be new, empty or an earlier export (it is replaced whole)",
    )
    parser.add_argument(
        "--cases",
        type=Path,
        default=None,
        metavar="DIR",
        help="scenario folders to export (default: tests/cases in the project)",
    )


def main(args: argparse.Namespace) -> int:
    """Build the package, evaluate every library for every case, write the layout and say what it holds."""
    config = load_config()
    check_out_dir(args.out, MANIFEST, "test export")  # before the minute of work, not after
    cases = read_cases(args.cases or config.cases_dir)
    engine = shared_engine()
    pkg = build_package(config, engine)
    result = export_layout(pkg, engine, cases, args.out)
    print(
        f"wrote {result.root}/input/tests/library: {len(result.libraries)} libraries x {len(result.cases)} cases "
        f"({len(result.files)} files), expected values from the reference engine"
    )
    return 0
