"""The thin CLI's shared flags (--at, --json, the deprecated --format) and `guideline --help`."""

from __future__ import annotations

import argparse

import pytest

from guideline.cli import common
from guideline.cli import main as cli
from guideline.core.errors import ExitCode
from tests.support.cliparse import commands

# The commands that print results; each offers the one --json.
PRINTING = {("validate",), ("recommend",), ("publish",), ("apply",), ("cds", "services"), ("cds", "call")}


def _action(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return next((a for a in parser._actions if flag in a.option_strings), None)


def _minimal_argv(parser: argparse.ArgumentParser) -> list[str]:
    """Just enough arguments for the parser to accept: a value for each required option and argument."""
    argv: list[str] = []
    for action in parser._actions:
        if action.option_strings and action.required:
            argv += [action.option_strings[0], "x"]
        elif not action.option_strings and not isinstance(action, argparse._SubParsersAction):
            argv.append("x")
    for group in parser._mutually_exclusive_groups:
        if group.required:
            argv += [group._group_actions[0].option_strings[0], "x"]
    return argv


def _with_at() -> list[tuple[str, ...]]:
    return sorted(p for p, parser in commands().items() if _action(parser, "--at"))


def _with_json() -> list[tuple[str, ...]]:
    return sorted(p for p, parser in commands().items() if _action(parser, "--json"))


# ---------------------------------------------------------------- --at


def test_at_is_offered_by_recommend_and_apply_as_one_flag() -> None:
    """Verify that recommend and apply offer --at, each with the shared parser, metavar and help."""
    assert {("recommend",), ("apply",)} <= set(_with_at())
    for path in _with_at():
        action = _action(commands()[path], "--at")
        assert action is not None
        assert action.type is common.parse_at and action.metavar == "DATETIME" and action.default is None
        assert action.help and common.AT_FORMS in action.help and "default:" in action.help


@pytest.mark.parametrize(("path", "default"), [(("recommend",), "now"), (("apply",), "server's clock")])
def test_at_help_names_each_commands_default(path: tuple[str, ...], default: str) -> None:
    """Verify that --at's help says what each command evaluates as of without it."""
    action = _action(commands()[path], "--at")
    assert action is not None and action.help
    assert default in action.help.split("default:")[1]


@pytest.mark.parametrize("path", _with_at(), ids=" ".join)
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-06-01", "2026-06-01T00:00:00Z"),
        ("2026-06-01T12:00:00Z", "2026-06-01T12:00:00Z"),
        ("2026-06-01T12:00Z", "2026-06-01T12:00:00Z"),
        ("2026-06-01T14:00:00+02:00", "2026-06-01T14:00:00+02:00"),
        ("2026-06-01T12:00:00+00:00", "2026-06-01T12:00:00Z"),
    ],
)
def test_at_parses_dates_and_date_times_with_offset(path: tuple[str, ...], value: str, expected: str) -> None:
    """Verify that --at takes a date (00:00 UTC) or a date-time with offset, normalised, in every command."""
    parser = commands()[path]
    args = cli.make_parser().parse_args([*path, *_minimal_argv(parser), "--at", value])
    assert args.at == expected


@pytest.mark.parametrize("path", _with_at(), ids=" ".join)
def test_at_without_offset_exits_2_saying_how_to_fix_it(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    """Verify that an offset-less --at is a usage error (exit 2) telling how to add the offset."""
    argv = [*path, *_minimal_argv(commands()[path]), "--at", "2026-06-01T12:00"]
    assert cli.main(argv) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "argument --at: '2026-06-01T12:00' has no UTC offset; add one (e.g. 2026-06-01T12:00:00Z or +02:00)" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("value", ["tomorrow", "2026-13-01", "", "2026-06-01T25:00Z"])
@pytest.mark.parametrize("path", _with_at(), ids=" ".join)
def test_at_garbage_exits_2(path: tuple[str, ...], value: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that a --at that is no date at all is a usage error (exit 2) naming the accepted forms."""
    argv = [*path, *_minimal_argv(commands()[path]), "--at", value]
    assert cli.main(argv) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert f"argument --at: {value!r} is not {common.AT_FORMS}" in err and "Traceback" not in err


# ---------------------------------------------------------------- --json


def test_json_is_offered_by_every_printing_command() -> None:
    """Verify that every command printing results offers the same --json flag, setting args.json."""
    assert PRINTING <= set(_with_json())
    for path in _with_json():
        action = _action(commands()[path], "--json")
        assert isinstance(action, argparse._StoreTrueAction) and action.dest == "json", path


@pytest.mark.parametrize("path", _with_json(), ids=" ".join)
def test_json_sets_args_json(path: tuple[str, ...]) -> None:
    """Verify that --json sets args.json and that it is off without the flag."""
    argv = [*path, *_minimal_argv(commands()[path])]
    assert cli.make_parser().parse_args([*argv, "--json"]).json is True
    assert cli.make_parser().parse_args(argv).json is False


def test_no_command_shows_a_format_flag() -> None:
    """Verify that --json is the one spelling in help: no command shows --format."""
    for path, parser in commands().items():
        assert "--format" not in parser.format_help(), path


@pytest.mark.parametrize(("value", "expected"), [("json", True), ("text", False)])
def test_validate_format_alias_still_works(value: str, expected: bool, capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that validate's old `--format text|json` still parses, onto args.json, with a note to use --json."""
    args = cli.make_parser().parse_args(["validate", "--format", value])
    assert args.json is expected
    assert "deprecated" in capsys.readouterr().err


def test_validate_format_alias_keeps_refusing_other_values(capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that `--format xml` is still a usage error (exit 2), not a traceback."""
    assert cli.main(["validate", "--format", "xml"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "invalid choice: 'xml'" in err and "Traceback" not in err


def test_validate_format_alias_is_hidden_from_help() -> None:
    """Verify that validate's help shows --json and not the deprecated --format."""
    text = commands()[("validate",)].format_help()
    assert "--json" in text and "--format" not in text


# ---------------------------------------------------------------- guideline --help


def test_top_level_help_lists_commands_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that `guideline --help` exits 0 listing every subcommand and every exit code with its meaning."""
    assert cli.main(["--help"]) == ExitCode.OK
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert f"\n    {name} " in out or f"\n    {name}\n" in out, name
    lines = out.splitlines()
    for code, meaning in cli.exit_codes().items():
        assert f"  {code:<4} {meaning}" in lines, code
    members = {v for k, v in vars(ExitCode).items() if k.isupper() and isinstance(v, int)}
    assert set(cli.exit_codes()) == members | {130}


def test_interrupted_run_exits_130(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that Ctrl-C during a command exits 130 with one line, no traceback."""

    def interrupt(_args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr("guideline.cli.build.main", interrupt)
    assert cli.main(["build"]) == cli.INTERRUPTED == 130
    assert capsys.readouterr().err == "interrupted\n"
