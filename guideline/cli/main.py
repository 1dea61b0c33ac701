"""Command-line entry point: routes subcommands to their modules and maps errors to exit codes."""

from __future__ import annotations

import argparse
import importlib
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
    "recommend": ("guideline.cli.recommend", "evaluate the pathway locally for the one patient in a bundle"),
    "validate": ("guideline.cli.validate", "check sources, dist/, a bundle or a package (all layers)"),
    "render": (
        "guideline.cli.render",
        "write the static HTML site (diagram, recommendations, cases) to site/",
    ),
}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="guideline",
        description="Build, validate, evaluate and publish the generalized lipodystrophy CPG module.",
        epilog="Exit codes: 0 ok, 1 invalid content, 2 usage, 3 toolchain missing, 4 server unreachable, "
        "5 server rejected, 6 version conflict, 7 bad input, 8 engine error.",
    )
    parser.add_argument("--version", action="version", version=f"guideline {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).define_parser(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
        return 130
    except BrokenPipeError:
        return ExitCode.OK


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
