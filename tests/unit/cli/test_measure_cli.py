"""`guideline measure`: its usage errors, each with its fixed exit code and no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from guideline.cli import main as cli
from guideline.core.errors import ExitCode

PERIOD = ["--period", "2026-01-01/2026-12-31"]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (PERIOD, "one of --population PATH"),
        (["--population", "x", "--server", "http://127.0.0.1:1/fhir", *PERIOD], "one of --population PATH"),
        (
            ["--server", "http://127.0.0.1:1/fhir", "--subject-list", *PERIOD],
            "--subject-list only apply with --population",
        ),
        (["--server", "http://127.0.0.1:1/fhir", "--engine", "js", *PERIOD], "--engine only apply with --population"),
    ],
)
def test_usage_errors_exit_2_with_a_message(argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that a wrong combination of flags exits USAGE and says what to give."""
    assert cli.main(["measure", *argv]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


@pytest.mark.parametrize("period", ["2026", "2026-12-31/2026-01-01", "2026-02-30/2026-03-01"])
def test_a_bad_period_exits_2(period: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that argparse refuses a bad --period with the reason (exit 2)."""
    assert cli.main(["measure", "--population", "x", "--period", period]) == ExitCode.USAGE
    assert "--period" in capsys.readouterr().err


def test_a_missing_population_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that a population path that does not exist exits BAD_INPUT naming it, before any engine starts."""
    missing = tmp_path / "nope"
    assert cli.main(["measure", "--population", str(missing), *PERIOD]) == ExitCode.BAD_INPUT
    err = capsys.readouterr().err
    assert str(missing) in err and "Traceback" not in err


def test_out_must_not_be_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that --out naming a folder is a usage error."""
    assert cli.main(["measure", "--population", str(tmp_path), "--out", str(tmp_path), *PERIOD]) == ExitCode.USAGE
    assert "a folder" in capsys.readouterr().err


def test_an_unreachable_server_exits_4(capsys: pytest.CaptureFixture[str]) -> None:
    """Verify that a server nobody listens on exits SERVER_UNREACHABLE with a message, not a traceback."""
    rc = cli.main(["measure", "--server", "http://127.0.0.1:9/fhir", "--timeout", "1", *PERIOD])
    assert rc == ExitCode.SERVER_UNREACHABLE
    assert "Traceback" not in capsys.readouterr().err
