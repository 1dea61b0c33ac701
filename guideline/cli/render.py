"""`guideline render`: the offline static site."""

from __future__ import annotations

import argparse
from pathlib import Path

from guideline.render.site import render


def define_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: site/ in the project)")


def main(args: argparse.Namespace) -> int:
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
