"""`guideline render`: the offline static site."""

from __future__ import annotations

import argparse
from pathlib import Path

from guideline.core.fsutil import check_out_dir
from guideline.render.site import render


def define_parser(parser: argparse.ArgumentParser) -> None:
    """Add this subcommand's flags to `parser`: --out."""
    parser.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="output folder (default: site/ in the project)"
    )


def main(args: argparse.Namespace) -> int:
    """Render the site into --out (a new, empty or earlier site folder; checked before building)."""
    if args.out is not None:
        check_out_dir(args.out, "index.html", "site")  # before the build, not only before writing
    result = render(args.out)
    pages = sum(1 for p in result.files if p.suffix == ".html")
    data = sum(1 for p in result.files if p.suffix == ".json")
    site = result.site
    print(
        f"rendered {site.package_id}#{site.version}: {pages} pages ({len(site.recommendations)} recommendations), "
        f"{data} JSON files, {len(site.cases)} test cases"
    )
    print(f"  {result.index}")
    return 0
