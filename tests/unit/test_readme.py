"""The README tells the truth: commands, flags, environment variables, exit codes, layout and figures are
checked against the code (argument parsers, sources, ExitCode, the tree, BENCHMARKS.md), never a copied list."""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import io
import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from guideline.cli.main import COMMANDS, exit_codes, make_parser
from guideline.core.config import CONFIG_FILE, PackageConfig
from guideline.core.errors import ExitCode
from tests.support import CASES_DIR, ROOT
from tests.support.cliparse import commands
from tools import bench, synth

README = ROOT / "README.md"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
CODE_SPAN = re.compile(r"`([^`]+)`")


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def _section(heading: str) -> str:
    """The text under a README heading (exact line, e.g. '## Layout') up to the next heading of its level or above."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = _readme().splitlines()
    assert heading in lines, f"README has no section {heading!r}"
    out: list[str] = []
    fenced = False
    for line in lines[lines.index(heading) + 1 :]:
        fenced ^= line.startswith("```")
        if not fenced and line.startswith("#") and len(line) - len(line.lstrip("#")) <= level:
            break
        out.append(line)
    return "\n".join(out)


def _table(text: str) -> list[list[str]]:
    """Rows (cells, with `\\|` unescaped) of the Markdown tables in text, header and rule rows left out."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("|") or re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line):
            continue
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        rows.append(cells)
    return rows[1:] if rows else rows  # the first row is the header


# ---------------------------------------------------------------- the command table vs the parsers


@dataclasses.dataclass(frozen=True)
class _Options:
    visible: set[str]  # option strings shown by --help
    hidden: set[str]  # deprecated spellings (help=SUPPRESS)
    positionals: set[str]  # as --help shows them (metavar)


def _options(parser: argparse.ArgumentParser) -> _Options:
    visible: set[str] = set()
    hidden: set[str] = set()
    positionals: set[str] = set()
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if not action.option_strings:
            positionals.add(str(action.metavar or action.dest.upper()))
        elif action.help == argparse.SUPPRESS:
            hidden.update(action.option_strings)
        else:
            visible.update(s for s in action.option_strings if s.startswith("--"))
    return _Options(visible, hidden, positionals)


def _command_rows() -> list[str]:
    """The synopsis (first cell) of every row of the README's command table."""
    rows = _table(_section("## Commands").split("### ")[0])
    synopses = [CODE_SPAN.match(r[0]) for r in rows]
    assert all(synopses), "every command row starts with the command in a code span"
    return [m.group(1) for m in synopses if m]


def _rows_for(path: tuple[str, ...]) -> list[str]:
    return [s for s in _command_rows() if s.split()[: len(path) + 1] == ["guideline", *path]]


def _has_token(text: str, token: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(token)}(?![\w-])", text) is not None


@pytest.mark.parametrize("path", sorted(commands()), ids=" ".join)
def test_command_row_shows_every_flag_of_the_parser(path: tuple[str, ...]) -> None:
    """Verify that the README's row for a command shows each of its options and arguments, and nothing else."""
    rows = _rows_for(path)
    cmd = "guideline " + " ".join(path)
    assert rows, f"README 'Commands' has no row for `{cmd}`"
    shown = " ".join(rows)
    opts = _options(commands()[path])
    missing = sorted(f for f in opts.visible if not _has_token(shown, f))
    assert not missing, f"`{cmd}` has options the README row does not show: {missing} (add them to its row)"
    missing = sorted(p for p in opts.positionals if not _has_token(shown, p))
    assert not missing, f"`{cmd}`'s README row does not show its arguments {missing}"
    extra = sorted(set(FLAG.findall(shown)) - opts.visible)
    assert not extra, f"the README row for `{cmd}` shows {extra}, which `{cmd} --help` does not offer" + (
        " (hidden deprecated spellings stay out of the README)" if set(extra) & opts.hidden else ""
    )


def test_every_command_row_is_a_command() -> None:
    """Verify that each `guideline ...` row of the command table names a command the parser knows."""
    known = {("guideline", *p) for p in commands()}
    for synopsis in _command_rows():
        words = tuple(synopsis.split())
        if words[0] == "guideline":
            assert any(words[: len(k)] == k for k in known), f"README shows `{synopsis}`: no such command"
        else:
            assert words[0] == "scripts/server", f"unexpected row `{synopsis}` in the command table"


def _server_usage() -> str:
    """scripts/server's usage text (the heredoc its `usage` prints), read without running the script."""
    text = (ROOT / "scripts" / "server").read_text(encoding="utf-8")
    m = re.search(r"usage\(\) \{\n\tcat <<'EOF'\n(.*?)\nEOF\n", text, re.S)
    assert m, "scripts/server has no usage() heredoc"
    return m.group(1)


def test_server_script_row_matches_its_usage() -> None:
    """Verify that the README's scripts/server row shows its actions and flags as its usage text does."""
    usage = _server_usage()
    first = usage.splitlines()[0]
    assert first.startswith("usage: scripts/server ")
    actions = first.split()[2].split("|")
    flags = set(FLAG.findall(usage))
    rows = [s for s in _command_rows() if s.startswith("scripts/server ")]
    assert len(rows) == 1, "one row for scripts/server"
    row = rows[0]
    assert row.split()[1].split("|") == actions, f"README `{row}` vs usage `{first}`"
    assert flags == set(FLAG.findall(row)), f"README `{row}` vs the flags in scripts/server's usage {sorted(flags)}"


def _known_flags() -> set[str]:
    """Every flag the README can mention: guideline, scripts/server, synth, bench, and what scripts/test runs."""
    flags = {f for p in commands().values() for f in _options(p).visible}
    flags |= {s for a in make_parser()._actions for s in a.option_strings}  # --help, --version
    flags |= set(FLAG.findall(_server_usage()))
    # The README's 'Tests' section quotes what scripts/test runs (ruff format --check ...).
    flags |= set(FLAG.findall((ROOT / "scripts" / "test").read_text(encoding="utf-8")))
    flags |= set(FLAG.findall(synth.make_parser().format_help()))
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        bench.main(["--help"])
    flags |= set(FLAG.findall(out.getvalue()))
    return flags


def test_every_flag_in_the_readme_exists() -> None:
    """Verify that every --flag the README mentions anywhere is offered by one of the project's commands."""
    unknown = sorted(set(FLAG.findall(_readme())) - _known_flags())
    assert not unknown, f"the README mentions flags no command offers: {unknown}"


# ---------------------------------------------------------------- environment variables

SCANNED = ("guideline", "tools", "scripts", "tests", ".ci", "server/src")
SKIPPED_DIRS = {"__pycache__", "node_modules", "target"}
# The shell's own variables (and PATH/HOME, which every program reads) are not the project's configuration.
SHELL_OWN = {
    "BASH_SOURCE",
    "BASH_REMATCH",
    "SECONDS",
    "RANDOM",
    "LINENO",
    "FUNCNAME",
    "PIPESTATUS",
    "EUID",
    "UID",
    "PPID",
    "IFS",
    "OPTARG",
    "OPTIND",
    "PWD",
    "OLDPWD",
    "HOME",
    "PATH",
}
SHELL_REF = re.compile(r"\$\{?([A-Z_][A-Z0-9_]*)")
SHELL_DEFAULTED = re.compile(r"\$\{([A-Z_][A-Z0-9_]*):?[-=+?]")
SHELL_ASSIGNED = re.compile(
    r"^\s*(?:export\s+|readonly\s+|local\s+(?:-\w+\s+)?|declare\s+(?:-\w+\s+)?)?([A-Z_][A-Z0-9_]*)=", re.M
)
SHELL_LOOP = re.compile(r"\bfor\s+([A-Z_][A-Z0-9_]*)\s+in\b|\bread\s+(?:-\w+\s+)*([A-Z_][A-Z0-9_]*)")
JS_ENV = re.compile(r"process\.env(?:\.([A-Za-z_]\w*)|\[\s*['\"](\w+)['\"]\s*\])")
JAVA_ENV = re.compile(r"System\.getenv\(\s*\"(\w+)\"\s*\)")
# Spring placeholders in the server's application.yaml: ${GUIDELINE_DB_URL:} reads that variable.
YAML_ENV = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::[^}]*)?\}")


def _files() -> Iterator[Path]:
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*")):
            if path.is_file() and not SKIPPED_DIRS & set(path.relative_to(ROOT).parts):
                yield path


def _is_environ(node: ast.AST) -> bool:
    if isinstance(node, ast.Attribute):
        return node.attr == "environ" and isinstance(node.value, ast.Name) and node.value.id == "os"
    return isinstance(node, ast.Name) and node.id == "environ"


def _env_arguments(tree: ast.AST) -> Iterator[ast.expr]:
    """The name expression of every environment read: os.environ.get/[]/in, os.getenv."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            f = node.func
            if isinstance(f, ast.Attribute) and f.attr in ("get", "pop", "setdefault") and _is_environ(f.value):
                yield node.args[0]
            elif (isinstance(f, ast.Attribute) and f.attr == "getenv") or (
                isinstance(f, ast.Name) and f.id == "getenv"
            ):
                yield node.args[0]
        elif isinstance(node, ast.Subscript) and _is_environ(node.value) and isinstance(node.ctx, ast.Load):
            yield node.slice
        elif isinstance(node, ast.Compare) and isinstance(node.ops[0], (ast.In, ast.NotIn)):
            if _is_environ(node.comparators[0]):
                yield node.left


def _module_strings(tree: ast.Module) -> dict[str, str]:
    """Module-level NAME = "text" constants, and names imported from our own modules (resolved there)."""
    out: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Constant):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name) and isinstance(node.value.value, str):
                    out[t.id] = node.value.value
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("guideline", "tools"):
            source = ROOT.joinpath(*node.module.split(".")).with_suffix(".py")
            if source.is_file():
                theirs = _module_strings(ast.parse(source.read_text(encoding="utf-8")))
                out.update({a.asname or a.name: theirs[a.name] for a in node.names if a.name in theirs})
    return out


def _python_reads(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = _module_strings(tree)
    for arg in _env_arguments(tree):
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            yield arg.value
        elif isinstance(arg, ast.Name) and arg.id in names:
            yield names[arg.id]
        else:
            # A read this test cannot name would escape documentation: use a literal or a module constant.
            yield f"<{path.relative_to(ROOT)}:{arg.lineno}: {ast.unparse(arg)}>"


def _shell_reads(text: str) -> set[str]:
    assigned = set(SHELL_ASSIGNED.findall(text)) | {n for pair in SHELL_LOOP.findall(text) for n in pair if n}
    refs = set(SHELL_REF.findall(text))
    # ${VAR:-default} reads the environment even when the script assigns VAR itself (PORT="${PORT:-8080}").
    return ((refs - assigned) | set(SHELL_DEFAULTED.findall(text))) - SHELL_OWN


def _env_reads() -> dict[str, set[str]]:
    """Every environment variable the code, scripts and tests read -> the files reading it."""
    found: dict[str, set[str]] = {}
    for path in _files():
        rel = str(path.relative_to(ROOT))
        if path.suffix == ".py":
            names: set[str] = set(_python_reads(path))
        elif path.suffix in (".mjs", ".js"):
            names = {a or b for a, b in JS_ENV.findall(path.read_text(encoding="utf-8"))}
        elif path.suffix == ".java":
            names = set(JAVA_ENV.findall(path.read_text(encoding="utf-8")))
        elif path.suffix in (".yaml", ".yml"):
            names = set(YAML_ENV.findall(path.read_text(encoding="utf-8")))
        elif not path.suffix and path.read_bytes()[:2] == b"#!":
            names = _shell_reads(path.read_text(encoding="utf-8"))
        else:
            continue
        for name in names:
            found.setdefault(name, set()).add(rel)
    return found


def _documented_variables() -> set[str]:
    rows = _table(_section("## Environment variables"))
    names = [CODE_SPAN.fullmatch(r[0]) for r in rows]
    assert all(names), "each row of 'Environment variables' starts with the variable in a code span"
    return {m.group(1) for m in names if m}


def test_env_scan_sees_the_known_reads() -> None:
    """Verify that the source scan finds reads in Python (via a constant), shell scripts and the tests."""
    reads = _env_reads()
    assert "guideline/remote/http.py" in reads["GUIDELINE_TOKEN"]
    assert "scripts/server" in reads["GUIDELINE_SERVER_PORT"]
    assert "tests/conftest.py" in reads["GUIDELINE_TEST_SERVER"]
    assert "server/src/main/resources/application.yaml" in reads["GUIDELINE_DB_PASSWORD"]
    assert "PORT" not in reads and "ROOT" not in reads  # assigned by the scripts themselves
    assert _shell_reads('X="${X:-1}"\nY=2\necho "$Y $Z ${W}"\nfor I in 1; do :; done; echo $I $HOME') == {"X", "Z", "W"}


def test_every_environment_variable_is_documented() -> None:
    """Verify that each environment variable read anywhere in the code or scripts has a README row."""
    reads = _env_reads()
    undocumented = {n: sorted(files) for n, files in reads.items() if n not in _documented_variables()}
    assert not undocumented, f"environment variables read but not in README 'Environment variables': {undocumented}"


def test_every_documented_variable_is_read() -> None:
    """Verify that the README documents no environment variable that nothing reads any more."""
    stale = sorted(_documented_variables() - set(_env_reads()))
    assert not stale, f"README 'Environment variables' lists variables nothing reads: {stale}"


# ---------------------------------------------------------------- exit codes


def test_exit_code_table_is_complete() -> None:
    """Verify that the README's exit-code table lists exactly the ExitCode members and 130 (Ctrl-C)."""
    rows = _table(_section("### Exit codes (fixed; never reused)"))
    documented = [int(r[0]) for r in rows]
    members = {v for k, v in vars(ExitCode).items() if k.isupper() and isinstance(v, int)}
    assert sorted(documented) == documented, "exit codes in ascending order"
    assert set(documented) == members | {130} == set(exit_codes())
    assert len(documented) == len(set(documented))


# ---------------------------------------------------------------- configuration


def test_configuration_documents_every_key() -> None:
    """Verify that 'Configuration' names every guideline.toml key and every cql-options.json field, and no other."""
    text = _section("## Configuration")
    config = tomllib.loads((ROOT / CONFIG_FILE).read_text(encoding="utf-8"))
    keys = {k for table in config.values() for k in table} | {f.name for f in dataclasses.fields(PackageConfig)}
    spans = set(CODE_SPAN.findall(text))
    assert not keys - spans, f"guideline.toml keys missing from README 'Configuration': {sorted(keys - spans)}"
    tables = {f"[{t}]" for t in config}
    listed = {k for r in _table(text) for k in CODE_SPAN.findall(r[0]) if k not in tables}
    assert listed <= keys, f"README 'Configuration' lists keys guideline.toml has not: {sorted(listed - keys)}"
    options = json.loads((ROOT / config["cql"]["options_file"]).read_text(encoding="utf-8"))
    missing = sorted(set(options) - spans)
    assert not missing, f"cql-options.json fields missing from README 'Configuration': {missing}"


# ---------------------------------------------------------------- layout


def _layout_paths() -> list[str]:
    """Code spans of the Layout section that are concrete paths in the checkout (first part a top-level entry)."""
    top = {p.name for p in ROOT.iterdir()}
    spans = CODE_SPAN.findall(_section("## Layout"))
    return [s for s in spans if s.split("/")[0] in top and not re.search(r"[<{…*\s]", s)]


def test_layout_paths_exist() -> None:
    """Verify that every concrete path the Layout section names exists in the checkout."""
    missing = [p for p in _layout_paths() if not (ROOT / p.rstrip("/")).exists()]
    assert not missing, f"README 'Layout' names paths that do not exist: {missing}"


def test_layout_names_every_stage_and_tool() -> None:
    """Verify that Layout names each guideline/ subpackage and each tools/ module."""
    shown = set(_layout_paths())
    stages = {f"guideline/{p.name}/" for p in (ROOT / "guideline").iterdir() if (p / "__init__.py").is_file()}
    tools = {f"tools/{p.name}" for p in (ROOT / "tools").glob("*.py") if p.name != "__init__.py"}
    assert not (stages | tools) - shown, f"README 'Layout' does not mention {sorted((stages | tools) - shown)}"


def test_one_cli_module_per_subcommand() -> None:
    """Verify the Layout's claim: each subcommand lives in guideline/cli/<its name>.py."""
    for name, (module, _) in COMMANDS.items():
        assert module == f"guideline.cli.{name.replace('-', '_')}"
        assert (ROOT / "guideline" / "cli" / f"{name.replace('-', '_')}.py").is_file()


def test_unit_tests_are_grouped_by_stage() -> None:
    """Verify the Layout's claim: tests/unit/ has one folder per package stage it tests (and tools/)."""
    stages = {p.name for p in (ROOT / "guideline").iterdir() if (p / "__init__.py").is_file()}
    folders = {p.name for p in (ROOT / "tests" / "unit").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders <= stages | {"tools"}, f"tests/unit/ folders that are no stage: {sorted(folders - stages)}"


def test_case_names_follow_the_documented_prefixes() -> None:
    """Verify that every scenario in tests/cases starts with a prefix the Layout lists, and each prefix is used."""
    prefixes = [s for s in CODE_SPAN.findall(_section("## Layout")) if re.fullmatch(r"[a-z<>N-]+-", s)]
    assert prefixes, "README 'Layout' lists the case-name prefixes in code spans (`gl-`, ...)"
    patterns = {p: re.compile(re.escape(p).replace("<N>", "[0-9]+")) for p in prefixes}
    cases = sorted(p.name for p in CASES_DIR.iterdir() if p.is_dir())
    unnamed = [c for c in cases if not any(rx.match(c) for rx in patterns.values())]
    assert not unnamed, f"cases whose name starts with no prefix listed in README 'Layout': {unnamed}"
    unused = [p for p, rx in patterns.items() if not any(rx.match(c) for c in cases)]
    assert not unused, f"README 'Layout' lists case prefixes no case uses: {unused}"


def test_artifact_counts() -> None:
    """Verify the counts 'What this is' gives: coded activities and value sets, against fhir_resources/."""
    text = _section("## What this is")
    for phrase, folder in (("coded activities", "activitydefinition"), ("value sets", "valueset")):
        m = re.search(rf"(\d+) {phrase}", text)
        assert m, f"'What this is' gives the number of {phrase}"
        count = len(list((ROOT / "fhir_resources" / folder).glob("*.json")))
        assert int(m.group(1)) == count, f"README says {m.group(0)}; fhir_resources/{folder}/ holds {count}"


# ---------------------------------------------------------------- figures


def test_headline_figures_come_from_benchmarks() -> None:
    """Verify that every number in the README's headline-ratio table appears in BENCHMARKS.md."""
    text = _section("## Performance")
    rows = _table(text)
    assert rows, "'Performance' has the headline-ratio table"
    bench_text = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    number = re.compile(r"(?<![\w.,])\d+(?:,\d{3})*(?:\.\d+)?")
    bench_numbers = set(number.findall(bench_text))
    for row in rows:
        # Code spans hold names (`GLR2Bromocriptine`, `$apply`), not figures.
        figures = number.findall(CODE_SPAN.sub("", " | ".join(row)))
        unknown = [f for f in figures if f not in bench_numbers]
        assert not unknown, f"README figures {unknown} (row {row[0]!r}) are not in BENCHMARKS.md: rerun or copy"


def test_readme_opens_with_the_twocommands() -> None:
    """Verify that the README starts with its title and the code block with ./scripts/demo and ./scripts/test."""
    lines = _readme().splitlines()
    assert lines[0] == "# Generalized lipodystrophy treatment: a computable FHIR guideline module"
    assert lines[2] == "```" and lines[5] == "```"
    assert lines[3].startswith("./scripts/demo ") and lines[4].startswith("./scripts/test ")
