"""Command-line entry point: routes subcommands to their modules and maps errors to exit codes."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence

from guideline import __version__
from guideline.core.errors import ExitCode, GuidelineError

# subcommand -> (module, one-line help). Each module exposes define_parser(parser) and main(args).
COMMANDS: dict[str, tuple[str, str]] = {
    "build": ("guideline.cli.build", "compile CQL and write dist/ (bundle, FHIR package, ELM)"),
    "publish": ("guideline.cli.publish", "publish the package to a FHIR server in one transaction"),
    "load-patients": ("guideline.cli.load_patients", "load patient Bundles onto a server (optionally date-rolled)"),
    "apply": ("guideline.cli.apply", "run PlanDefinition/$apply on a server for a patient"),
    "cds": ("guideline.cli.cds", "CDS Hooks client: discovery and calls"),
    "recommend": ("guideline.cli.recommend", "evaluate the pathway locally for one patient or a population"),
    "measure": (
        "guideline.cli.measure",
        "the indicator Measures over a population (locally) or on a server ($evaluate-measure): MeasureReports",
    ),
    "population-spark": (
        "guideline.cli.population_spark",
        "population mode as an Apache Spark job on a Bulk Data export (local[*] or a cluster)",
    ),
    "export": (
        "guideline.cli.export",
        "FHIR Bulk Data $export of only the types and codes the logic reads, into a population folder",
    ),
    "validate": ("guideline.cli.validate", "check sources, dist/, a bundle or a package (all layers)"),
    "conformance": (
        "guideline.cli.conformance",
        "run the scenarios against any CPG $apply / CDS Hooks server and report agreement",
    ),
    "export-tests": (
        "guideline.cli.export_tests",
        "write the scenarios in the CQL community's test layout (input/tests/library/...)",
    ),
    "render": (
        "guideline.cli.render",
        "write the static HTML site (diagram, recommendations, cases) to site/",
    ),
}

# A run stopped with Ctrl-C exits as shells report a process killed by SIGINT: 128 + 2.
INTERRUPTED = 128 + signal.SIGINT.value


def exit_codes() -> dict[int, str]:
    """Every exit code the CLI uses, with its meaning: the ExitCode members, then Ctrl-C."""
    codes = {
        value: name.lower().replace("_", " ")
        for name, value in vars(ExitCode).items()
        if name.isupper() and isinstance(value, int)
    }
    codes[INTERRUPTED] = "interrupted (Ctrl-C)"
    return dict(sorted(codes.items()))


def _epilog() -> str:
    # Built from ExitCode so that `guideline --help` cannot drift from the codes main() returns.
    rows = [f"  {code:<4} {meaning}" for code, meaning in exit_codes().items()]
    return "\n".join(["exit codes (README, 'Exit codes'):", *rows])


def make_parser() -> argparse.ArgumentParser:
    """The whole command line: every subcommand with its module's flags, exit codes in the epilog."""
    parser = argparse.ArgumentParser(
        prog="guideline",
        description="Build, validate, evaluate and publish the generalized lipodystrophy CPG module.",
        epilog=_epilog(),
        # Keeps the epilog's one-code-per-line table; the description is one line anyway.
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"guideline {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).define_parser(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv), run the subcommand and return its exit code; never raises.

    Library errors become one `error:` line (plus indented details) on stderr and their fixed code.
    """
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on usage errors and 0 on --help
        return int(e.code or 0)
    try:
        rc: int = importlib.import_module(args._module).main(args)
        return rc
    except GuidelineError as e:
        print(f"error: {e.message}", file=sys.stderr)
        for d in e.details:
            print(f"  {d}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:
        return ExitCode.OK


def run() -> None:
    """The `guideline` console script: main() on sys.argv, its result as the process exit status."""
    sys.exit(main())


if __name__ == "__main__":
    run()
