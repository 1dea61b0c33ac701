"""Verify that every command taking a path answers an unusable one with one `error:` line and a fixed code.

Edge kinds: a folder where a file is expected (and an existing file where an --out folder is expected),
a real dist/package.tgz and a non-gzip x.tgz, an empty file, binary files (random bytes, a PNG) and a
missing path. Never a traceback. Exit codes chosen per command (README, "Exit codes"): 2 when the path
is of the wrong kind for what the command states it takes, 7 for unreadable patient or population data,
1 for content that validate (and so publish) finds invalid.

- build --out, render --out: 2 for an existing file, a path under a file, or a folder holding other
  things (writing replaces the whole folder, so it must be new, empty or an earlier output of the
  command: bundle.json for build, index.html for render). A new or missing path is created.
- validate PATH: 2 for a missing path or a folder with nothing to validate; 1 for an empty file,
  binary data, a PNG or a non-gzip .tgz (located findings in the report on stdout, plus one `error:`
  line on stderr); 0 for dist/, its bundle.json or its package.tgz.
- publish [BUNDLE]: reads PATH with validate's reader, so it takes what validate takes (dist/,
  bundle.json, package.tgz) and refuses the rest with validate's code (2 or 1) before any server is
  contacted.
- recommend --patient-bundle FILE, load-patients BUNDLE...: 2 for a folder; 7 for a missing, empty,
  binary or PNG file or any .tgz.
- recommend --population PATH: 7 for a missing path and for a PATH in which nothing is recognised as
  input (a folder with no *.json, an empty file, an archive, an image, a first line that is not
  JSON); 2 for an --out that is a folder or lies under something that is not a folder.

load-patients and publish get `--server http://127.0.0.1:9` (nothing listens there): a bad input must be
reported as such, never as exit 4 (server unreachable).
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from guideline.cli import main as cli
from guideline.content.cql import Engine
from guideline.content.outputs import build
from guideline.core.config import Config
from guideline.core.errors import ExitCode, UsageError
from guideline.remote import http
from guideline.remote.publish import load_resources
from guideline.render.site import write_site
from tests.support import BAD_INPUTS, ROOT

FILES = BAD_INPUTS / "files"
DEAD_SERVER = "http://127.0.0.1:9"  # the discard port: nothing listens, connections are refused at once

OK = ExitCode.OK
USAGE = ExitCode.USAGE
CONTENT = ExitCode.INVALID_CONTENT
BAD = ExitCode.BAD_INPUT
UNREACHABLE = ExitCode.SERVER_UNREACHABLE


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, config: Config, engine: Engine) -> dict[str, Path]:
    """One path per edge kind, in a private folder (build/render rows must never touch committed files)."""
    tmp = tmp_path_factory.mktemp("edge")
    dist = build(tmp / "dist", config, engine).out_dir
    (tmp / "empty-folder").mkdir()
    (tmp / "notes").mkdir()
    (tmp / "notes" / "notes.txt").write_text("not a guideline file\n", encoding="utf-8")
    for name, source in (("x.tgz", "not-a-package.tgz"), ("empty.json", "empty.json")):
        shutil.copy(FILES / source, tmp / name)
    for name in ("random.bin", "image.png"):
        shutil.copy(FILES / name, tmp / name)
    return {
        "folder": tmp / "empty-folder",
        "foreign": tmp / "notes",
        "dist": dist,
        "package": dist / "package.tgz",
        "bundle": dist / "bundle.json",
        "fake-tgz": tmp / "x.tgz",
        "empty": tmp / "empty.json",
        "random": tmp / "random.bin",
        "png": tmp / "image.png",
        "missing": tmp / "missing.json",
        "under-file": tmp / "empty.json" / "sub",
    }


# command -> argv for a path
COMMANDS: dict[str, Callable[[Path], list[str]]] = {
    "build": lambda p: ["build", "--out", str(p)],
    "render": lambda p: ["render", "--out", str(p)],
    "validate": lambda p: ["validate", str(p)],
    "publish": lambda p: ["publish", str(p), "--server", DEAD_SERVER],
    "load-patients": lambda p: ["load-patients", str(p), "--server", DEAD_SERVER],
    "patient-bundle": lambda p: ["recommend", "--patient-bundle", str(p)],
    "population": lambda p: ["recommend", "--population", str(p)],
    # --out is checked first, so the population given does not matter
    "population-out": lambda p: ["recommend", "--population", str(FILES / "empty.json"), "--out", str(p)],
}


@dataclass(frozen=True)
class Row:
    """One command given one edge kind: the exit code and a fragment of its one `error:` line."""

    command: str
    kind: str
    code: int
    says: str = ""
    names: str = ""  # what the error line names instead of the path (the server, for accepted input)


def _rows() -> list[Row]:
    rows: list[Row] = []
    for command in ("build", "render"):
        for kind in ("package", "fake-tgz", "empty", "random", "png"):
            rows.append(Row(command, kind, USAGE, "not a folder"))
        rows.append(Row(command, "foreign", USAGE, "holds other files"))
        rows.append(Row(command, "under-file", USAGE, "is a file, not a folder"))
    rows.append(Row("render", "dist", USAGE, "no index.html"))
    for command in ("validate", "publish"):
        accepted = (OK, "", "") if command == "validate" else (UNREACHABLE, "did not answer", DEAD_SERVER)
        for kind in ("dist", "package", "bundle"):
            rows.append(Row(command, kind, *accepted))
        for kind in ("folder", "foreign"):
            rows.append(Row(command, kind, USAGE, "nothing to validate"))
        for kind in ("fake-tgz", "empty", "random", "png"):
            rows.append(Row(command, kind, CONTENT, "validation error" if command == "validate" else "not published"))
        rows.append(Row(command, "missing", USAGE, "does not exist"))
    for command in ("load-patients", "patient-bundle"):
        for kind in ("folder", "foreign", "dist"):
            rows.append(Row(command, kind, USAGE, "a folder"))
        rows += [
            Row(command, "package", BAD, "a gzip archive"),
            Row(command, "fake-tgz", BAD, "not valid JSON"),
            Row(command, "empty", BAD, "the file is empty"),
            Row(command, "random", BAD, "binary data"),
            Row(command, "png", BAD, "a PNG image"),
            Row(command, "missing", BAD, "cannot read"),
        ]
    rows += [
        Row("population", "folder", BAD, "no *.json nor *.ndjson file"),
        Row("population", "foreign", BAD, "no *.json nor *.ndjson file"),
        Row("population", "package", BAD, "a gzip archive"),
        Row("population", "fake-tgz", BAD, "line 1 is not JSON"),
        Row("population", "empty", BAD, "the file is empty"),
        Row("population", "random", BAD, "binary data"),
        Row("population", "png", BAD, "a PNG image"),
        Row("population", "missing", BAD, "cannot read"),
        Row("population-out", "folder", USAGE, "a folder"),
        Row("population-out", "dist", USAGE, "a folder"),
        Row("population-out", "under-file", USAGE, "not an existing folder"),
    ]
    return rows


def _snapshot(path: Path) -> dict[str, bytes] | None:
    if path.is_file():
        return {"": path.read_bytes()}
    if path.is_dir():
        return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    return None


def assert_one_error(err: str, says: str, names: str) -> None:
    """stderr holds exactly one `error:` line (details may follow, indented), naming `names`; no traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert names in lines[0] and says in lines[0], lines[0]


@pytest.mark.parametrize("row", _rows(), ids=lambda r: f"{r.command}-{r.kind}")
def test_edge_input(
    row: Row, inputs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Verify that the command exits with its documented code and one clear `error:` line naming the path."""
    # Accepted input then meets the dead server: one attempt is enough to tell exit 4.
    monkeypatch.setattr(http, "RetryPolicy", functools.partial(http.RetryPolicy, attempts=1))
    path = inputs[row.kind]
    before = _snapshot(path)
    rc = cli.main(COMMANDS[row.command](path))
    out, err = capsys.readouterr()
    assert rc == row.code, out + err
    if row.code == OK:
        assert "Traceback" not in err and "error:" not in err, err
    else:
        assert_one_error(err, row.says, row.names or str(path))
    assert _snapshot(path) == before  # a refused --out is left exactly as it was


def test_publish_reads_what_validate_reads(inputs: dict[str, Path]) -> None:
    """Verify that publish takes the resources of a dist/ folder, its bundle.json and its package.tgz alike."""
    bundle = json.loads(inputs["bundle"].read_text(encoding="utf-8"))
    expected = sorted(f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"])
    for kind in ("dist", "bundle", "package"):
        got = sorted(f"{r['resourceType']}/{r['id']}" for r in load_resources(inputs[kind]))
        assert got == expected, kind


def test_writers_refuse_a_file_or_a_foreign_folder(inputs: dict[str, Path], tmp_path: Path) -> None:
    """Verify that the library writers (not only the CLI) never replace a file or a folder of other things."""
    pkg_bytes = inputs["package"].read_bytes()
    with pytest.raises(UsageError, match="not a folder"):
        write_site({"index.html": b"x"}, inputs["package"])
    with pytest.raises(UsageError, match="holds other files"):
        write_site({"index.html": b"x"}, inputs["foreign"])
    assert inputs["package"].read_bytes() == pkg_bytes
    # An empty folder and an earlier output are fine.
    (tmp_path / "site").mkdir()
    write_site({"index.html": b"x"}, tmp_path / "site")
    write_site({"index.html": b"y"}, tmp_path / "site")
    assert (tmp_path / "site" / "index.html").read_bytes() == b"y"


SUBPROCESS = [
    (["build", "--out", "{}"], "png", USAGE),
    (["render", "--out", "{}"], "foreign", USAGE),
    (["validate", "{}"], "folder", USAGE),
    (["publish", "{}", "--server", DEAD_SERVER], "fake-tgz", CONTENT),
    (["load-patients", "{}", "--server", DEAD_SERVER], "random", BAD),
    (["recommend", "--patient-bundle", "{}"], "dist", USAGE),
    (["recommend", "--population", "{}"], "package", BAD),
]


@pytest.mark.parametrize(("argv", "kind", "code"), SUBPROCESS, ids=[f"{a[0]}-{k}" for a, k, _ in SUBPROCESS])
def test_no_traceback_reaches_a_terminal(argv: list[str], kind: str, code: int, inputs: dict[str, Path]) -> None:
    """Verify, in a separate process as a user runs it, that a bad path gives one `error:` line and the code."""
    path = inputs[kind]
    proc = subprocess.run(
        [sys.executable, "-m", "guideline", *(str(path) if a == "{}" else a for a in argv)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == code, proc.stderr
    assert_one_error(proc.stderr, "", str(path))
