"""`guideline build`: compile the CQL and write dist/."""

from __future__ import annotations

import argparse
from pathlib import Path

from guideline.content.outputs import build


def define_parser(parser: argparse.ArgumentParser) -> None:
    """Add this subcommand's flags to `parser`: --out."""
    parser.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="output folder (default: dist/ in the project)"
    )


def main(args: argparse.Namespace) -> int:
    """Build into --out (a new, empty or earlier build folder; checked before compiling) and list the outputs."""
    result = build(args.out)
    pkg = result.package
    for f in pkg.findings:
        print(f.render())
    counts: dict[str, int] = {}
    for r in pkg.resources:
        counts[r["resourceType"]] = counts.get(r["resourceType"], 0) + 1
    summary = ", ".join(f"{n} {t}" for t, n in sorted(counts.items()))
    print(f"built {pkg.config.package.id}#{pkg.config.package.version}: {summary}")
    for p in result.files:
        if p.parent == result.out_dir:
            print(f"  {p}")
    print(f"  {result.out_dir / 'elm'}/ ({len(pkg.elm)} ELM libraries)")
    return 0
