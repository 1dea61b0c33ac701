"""The command tree as argparse builds it, for tests that check flags and the README against it."""

from __future__ import annotations

import argparse

from guideline.cli.main import make_parser


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The sub-commands of `parser` by name (empty when it has none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def commands() -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every runnable command path ('validate',), ('cds', 'call'), ... with its parser."""
    out: dict[tuple[str, ...], argparse.ArgumentParser] = {}
    for name, parser in subparsers(make_parser()).items():
        nested = subparsers(parser)
        out.update({(name, sub): p for sub, p in nested.items()} or {(name,): parser})
    return out
