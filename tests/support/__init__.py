"""Shared test helpers: paths, the scenario list, fixtures for the validator, a fault proxy, free ports."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout
TESTS = ROOT / "tests"
CASES_DIR = TESTS / "cases"
BAD_INPUTS = TESTS / "bad_inputs"
SOURCE_TEXT = ROOT.parent / "shared" / "source" / "000_0056b441681d652f.txt"
