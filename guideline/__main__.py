"""`python -m guideline`: the same entry point as the `guideline` command."""

from guideline.cli.main import run

run()
