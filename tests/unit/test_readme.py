"""The README, CONTRIBUTING.md and docs/*.md tell the truth: commands, flags, environment variables, exit codes,
layout, figures and links are checked against the code (argument parsers, sources, ExitCode, the tree,
BENCHMARKS.md), never a copied list."""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import functools
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
from tools import bench, synth, synthea

README = ROOT / "README.md"
CONTRIBUTING = ROOT / "CONTRIBUTING.md"
DOCS = ROOT / "docs"
COMMANDS_DOC = DOCS / "commands.md"
CONFIGURATION_DOC = DOCS / "configuration.md"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
CODE_SPAN = re.compile(r"`([^`]+)`")


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _section(heading: str, path: Path = README) -> str:
    """The text under a heading of a Markdown file (exact line, e.g. '## Layout') up to the next heading of its
    level or above."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = path.read_text(encoding="utf-8").splitlines()
    assert heading in lines, f"{_rel(path)} has no section {heading!r}"
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
    """The synopsis (first cell) of every row of the command table in docs/commands.md."""
    rows = _table(_section("## Command table", COMMANDS_DOC))
    synopses = [CODE_SPAN.match(r[0]) for r in rows]
    assert all(synopses), "every command row starts with the command in a code span"
    return [m.group(1) for m in synopses if m]


def _rows_for(path: tuple[str, ...]) -> list[str]:
    return [s for s in _command_rows() if s.split()[: len(path) + 1] == ["guideline", *path]]


def _has_token(text: str, token: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(token)}(?![\w-])", text) is not None


@pytest.mark.parametrize("path", sorted(commands()), ids=" ".join)
def test_command_row_shows_every_flag_of_the_parser(path: tuple[str, ...]) -> None:
    """Verify that the command table's row for a command shows each of its options and arguments, and nothing
    else."""
    rows = _rows_for(path)
    cmd = "guideline " + " ".join(path)
    assert rows, f"docs/commands.md 'Command table' has no row for `{cmd}`"
    shown = " ".join(rows)
    opts = _options(commands()[path])
    missing = sorted(f for f in opts.visible if not _has_token(shown, f))
    assert not missing, f"`{cmd}` has options the docs/commands.md row does not show: {missing} (add them to its row)"
    missing = sorted(p for p in opts.positionals if not _has_token(shown, p))
    assert not missing, f"`{cmd}`'s docs/commands.md row does not show its arguments {missing}"
    extra = sorted(set(FLAG.findall(shown)) - opts.visible)
    assert not extra, f"the docs/commands.md row for `{cmd}` shows {extra}, which `{cmd} --help` does not offer" + (
        " (hidden deprecated spellings stay out of the docs)" if set(extra) & opts.hidden else ""
    )


def test_every_command_row_is_a_command() -> None:
    """Verify that each `guideline ...` row of the command table names a command the parser knows."""
    known = {("guideline", *p) for p in commands()}
    for synopsis in _command_rows():
        words = tuple(synopsis.split())
        if words[0] == "guideline":
            assert any(words[: len(k)] == k for k in known), f"docs/commands.md shows `{synopsis}`: no such command"
        else:
            assert words[0] == "scripts/server", f"unexpected row `{synopsis}` in the command table"


def _server_usage() -> str:
    """scripts/server's usage text (the heredoc its `usage` prints), read without running the script."""
    text = (ROOT / "scripts" / "server").read_text(encoding="utf-8")
    m = re.search(r"usage\(\) \{\n\tcat <<'EOF'\n(.*?)\nEOF\n", text, re.S)
    assert m, "scripts/server has no usage() heredoc"
    return m.group(1)


def test_server_script_row_matches_its_usage() -> None:
    """Verify that the command table's scripts/server row shows its actions and flags as its usage text does."""
    usage = _server_usage()
    first = usage.splitlines()[0]
    assert first.startswith("usage: scripts/server ")
    actions = first.split()[2].split("|")
    flags = set(FLAG.findall(usage))
    rows = [s for s in _command_rows() if s.startswith("scripts/server ")]
    assert len(rows) == 1, "one row for scripts/server"
    row = rows[0]
    assert row.split()[1].split("|") == actions, f"docs/commands.md `{row}` vs usage `{first}`"
    assert flags == set(FLAG.findall(row)), f"docs/commands.md `{row}` vs scripts/server's usage {sorted(flags)}"


@functools.cache
def _known_flags() -> set[str]:
    """Every flag the docs can mention: guideline, scripts/server, synth, bench, and what scripts/test runs."""
    flags = {f for p in commands().values() for f in _options(p).visible}
    flags |= {s for a in make_parser()._actions for s in a.option_strings}  # --help, --version
    flags |= set(FLAG.findall(_server_usage()))
    # CONTRIBUTING.md quotes what scripts/test runs (ruff format --check ...).
    flags |= set(FLAG.findall((ROOT / "scripts" / "test").read_text(encoding="utf-8")))
    flags |= set(FLAG.findall(synth.make_parser().format_help()))
    flags |= set(FLAG.findall(synthea.make_parser().format_help()))  # scripts/synth --synthea / --check
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        bench.main(["--help"])
    flags |= set(FLAG.findall(out.getvalue()))
    return flags


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


@functools.cache
def _file_strings(source: Path) -> dict[str, str]:
    """_module_strings of one file, parsed once (imports chain through the same modules thousands of times)."""
    return _module_strings(ast.parse(source.read_text(encoding="utf-8")))


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
                theirs = _file_strings(source)
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


@functools.cache
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
    rows = _table(_section("## Environment variables", CONFIGURATION_DOC))
    names = [CODE_SPAN.fullmatch(r[0]) for r in rows]
    assert all(names), (
        "each row of docs/configuration.md 'Environment variables' starts with the variable in a code span"
    )
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
    """Verify that each environment variable read anywhere in the code or scripts has a row in
    docs/configuration.md."""
    reads = _env_reads()
    undocumented = {n: sorted(files) for n, files in reads.items() if n not in _documented_variables()}
    assert not undocumented, (
        f"environment variables read but not in docs/configuration.md 'Environment variables': {undocumented}"
    )


def test_every_documented_variable_is_read() -> None:
    """Verify that docs/configuration.md documents no environment variable that nothing reads any more."""
    stale = sorted(_documented_variables() - set(_env_reads()))
    assert not stale, f"docs/configuration.md 'Environment variables' lists variables nothing reads: {stale}"


# ---------------------------------------------------------------- exit codes


def test_exit_code_table_is_complete() -> None:
    """Verify that the README's exit-code table lists exactly the ExitCode members and 130 (Ctrl-C)."""
    rows = _table(_section("## Exit codes (fixed; never reused)"))
    documented = [int(r[0]) for r in rows]
    members = {v for k, v in vars(ExitCode).items() if k.isupper() and isinstance(v, int)}
    assert sorted(documented) == documented, "exit codes in ascending order"
    assert set(documented) == members | {130} == set(exit_codes())
    assert len(documented) == len(set(documented))


# ---------------------------------------------------------------- configuration


def test_configuration_documents_every_key() -> None:
    """Verify that docs/configuration.md names every guideline.toml key and every cql-options.json field, and no
    other key."""
    config = tomllib.loads((ROOT / CONFIG_FILE).read_text(encoding="utf-8"))
    toml_text = _section(f"## `{CONFIG_FILE}`", CONFIGURATION_DOC)
    keys = {k for table in config.values() for k in table} | {f.name for f in dataclasses.fields(PackageConfig)}
    spans = set(CODE_SPAN.findall(toml_text))
    assert not keys - spans, f"guideline.toml keys missing from docs/configuration.md: {sorted(keys - spans)}"
    tables = {f"[{t}]" for t in config}
    listed = {k for r in _table(toml_text) for k in CODE_SPAN.findall(r[0]) if k not in tables}
    assert listed <= keys, f"docs/configuration.md lists keys guideline.toml has not: {sorted(listed - keys)}"
    options_file = config["cql"]["options_file"]
    options = json.loads((ROOT / options_file).read_text(encoding="utf-8"))
    missing = sorted(set(options) - set(CODE_SPAN.findall(_section(f"## `{options_file}`", CONFIGURATION_DOC))))
    assert not missing, f"cql-options.json fields missing from docs/configuration.md: {missing}"


def _yaml_settings(path: Path, root: str) -> list[str]:
    """The dotted keys under `root` that application.yaml gives a value (a two-space-indented YAML map)."""
    stack: list[str] = []
    keys = []
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^( *)([A-Za-z0-9_-]+):(.*)$", line)
        if not m:
            continue
        stack = [*stack[: len(m.group(1)) // 2], m.group(2)]
        if m.group(3).split("#")[0].strip() and stack[0] == root:
            keys.append(".".join(stack))
    return keys


def test_every_cds_setting_is_documented() -> None:
    """Verify that every guideline.cds.* setting of the server's application.yaml is named in the CDS docs."""
    keys = [k for k in _yaml_settings(ROOT / "server/src/main/resources/application.yaml", "guideline") if ".cds." in k]
    assert "guideline.cds.prefetch-include-medication" in keys
    docs = "".join((DOCS / name).read_text(encoding="utf-8") for name in ("cds-hooks.md", "security.md"))
    missing = [k for k in keys if k not in docs]
    assert not missing, f"guideline.cds settings missing from docs/cds-hooks.md and docs/security.md: {missing}"


# ---------------------------------------------------------------- layout


# Top-level folders that set-up or a build creates (.gitignore's "/name/" entries), never part of the layout.
IGNORED_TOP = {
    line.strip().strip("/")
    for line in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    if line.startswith("/") and line.strip().endswith("/")
}


def _concrete_paths(text: str) -> list[str]:
    """Code spans of text that are concrete paths in the checkout (first part a top-level entry, no placeholder)."""
    top = {p.name for p in ROOT.iterdir()}
    spans = CODE_SPAN.findall(text)
    return [s for s in spans if s.split("/")[0] in top and not re.search(r"[<{…*\s]", s)]


def _layout_paths() -> list[str]:
    """The concrete paths CONTRIBUTING.md's Layout section (the detailed one) names."""
    return _concrete_paths(_section("## Layout", CONTRIBUTING))


@pytest.mark.parametrize("doc", [README, CONTRIBUTING], ids=_rel)
def test_layout_paths_exist(doc: Path) -> None:
    """Verify that every concrete path a Layout section (README's short one, CONTRIBUTING's detailed one) names
    exists in the checkout."""
    missing = [p for p in _concrete_paths(_section("## Layout", doc)) if not (ROOT / p.rstrip("/")).exists()]
    assert not missing, f"{_rel(doc)} 'Layout' names paths that do not exist: {missing}"


def test_layout_names_every_stage_and_tool() -> None:
    """Verify that CONTRIBUTING.md's Layout names each guideline/ subpackage and each tools/ module."""
    shown = set(_layout_paths())
    stages = {f"guideline/{p.name}/" for p in (ROOT / "guideline").iterdir() if (p / "__init__.py").is_file()}
    tools = {f"tools/{p.name}" for p in (ROOT / "tools").glob("*.py") if p.name != "__init__.py"}
    missing = sorted((stages | tools) - shown)
    assert not missing, f"CONTRIBUTING.md 'Layout' does not mention {missing}"


def test_readme_layout_names_every_top_level_folder() -> None:
    """Verify that the README's short Layout names every top-level folder of the repository (tracked ones)."""
    shown = {p.split("/")[0] for p in _concrete_paths(_section("## Layout"))}
    folders = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")} - IGNORED_TOP
    assert not folders - shown, f"README 'Layout' does not mention {sorted(folders - shown)}"


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
    prefixes = [s for s in CODE_SPAN.findall(_section("## Layout", CONTRIBUTING)) if re.fullmatch(r"[a-z<>N-]+-", s)]
    assert prefixes, "CONTRIBUTING.md 'Layout' lists the case-name prefixes in code spans (`gl-`, ...)"
    patterns = {p: re.compile(re.escape(p).replace("<N>", "[0-9]+")) for p in prefixes}
    cases = sorted(p.name for p in CASES_DIR.iterdir() if p.is_dir())
    unnamed = [c for c in cases if not any(rx.match(c) for rx in patterns.values())]
    assert not unnamed, f"cases whose name starts with no prefix listed in CONTRIBUTING.md 'Layout': {unnamed}"
    unused = [p for p, rx in patterns.items() if not any(rx.match(c) for c in cases)]
    assert not unused, f"CONTRIBUTING.md 'Layout' lists case prefixes no case uses: {unused}"


@pytest.mark.parametrize("doc", [README, DOCS / "artifacts.md"], ids=_rel)
def test_artifact_counts(doc: Path) -> None:
    """Verify the counts the README's 'What this is' and docs/artifacts.md give: coded activities and value sets,
    against fhir_resources/."""
    text = doc.read_text(encoding="utf-8")
    for phrase, folder in (("coded activities", "activitydefinition"), ("value sets", "valueset")):
        found = re.findall(rf"(\d+) {phrase}", " ".join(text.split()))
        assert found, f"{_rel(doc)} gives the number of {phrase}"
        count = len(list((ROOT / "fhir_resources" / folder).glob("*.json")))
        assert {int(n) for n in found} == {count}, (
            f"{_rel(doc)} says {found} {phrase}; fhir_resources/{folder}/ holds {count}"
        )


# ---------------------------------------------------------------- figures


def test_headline_figures_come_from_benchmarks() -> None:
    """Verify that every number in docs/performance.md's tables appears in BENCHMARKS.md."""
    rows = _table((DOCS / "performance.md").read_text(encoding="utf-8"))
    assert rows, "docs/performance.md has the headline-ratio table"
    bench_text = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    number = re.compile(r"(?<![\w.,])\d+(?:,\d{3})*(?:\.\d+)?")
    bench_numbers = set(number.findall(bench_text))
    for row in rows:
        # Code spans hold names (`GLR2Bromocriptine`, `$apply`), not figures.
        figures = number.findall(CODE_SPAN.sub("", " | ".join(row)))
        unknown = [f for f in figures if f not in bench_numbers]
        assert not unknown, f"docs/performance.md figures {unknown} (row {row[0]!r}) are not in BENCHMARKS.md"


def test_readme_opens_with_the_twocommands() -> None:
    """Verify that the README starts with its title and the code block with ./scripts/demo and ./scripts/test."""
    lines = _readme().splitlines()
    assert lines[0] == "# Generalized lipodystrophy treatment: a computable FHIR guideline module"
    assert lines[2] == "```" and lines[5] == "```"
    assert lines[3].startswith("./scripts/demo ") and lines[4].startswith("./scripts/test ")
    assert all(re.fullmatch(r"\./scripts/\w+ +# \S.*", line) for line in lines[3:5]), "each with its one-line comment"


# ---------------------------------------------------------------- every Markdown file: README, CONTRIBUTING, docs/

DOC_FILES = [README, CONTRIBUTING, *sorted(DOCS.glob("*.md"))]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
SHELL_SEPARATORS = {"|", "||", "&&", ";", ">", ">>", "<", "2>", "&"}
SERVER_ACTIONS = ("start", "stop", "status", "build")


def _text(doc: Path) -> str:
    return doc.read_text(encoding="utf-8")


def _code_texts(text: str) -> list[str]:
    """The code of a Markdown text: each fenced block's lines (backslash continuations joined, `# ...` comments
    dropped) and each inline code span outside the blocks."""
    out: list[str] = []
    for block in FENCE.findall(text):
        out += [re.sub(r"\s#\s.*", "", line) for line in block.replace("\\\n", " ").splitlines()]
    return out + [s.replace("\\|", "|") for s in CODE_SPAN.findall(FENCE.sub("", text))]


@functools.cache
def _script_flags(name: str) -> set[str]:
    """The flags a script in scripts/ takes, from its parser or usage text; for a plain script, those its text names
    (scripts/test passes its arguments to pytest)."""
    if name == "server":
        return set(FLAG.findall(_server_usage()))
    if name == "synth":  # our synthetic patients, or with --synthea / --check a Synthea population
        return set(FLAG.findall(synth.make_parser().format_help() + synthea.make_parser().format_help()))
    if name == "bench":
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            bench.main(["--help"])
        return set(FLAG.findall(out.getvalue()))
    return set(FLAG.findall((ROOT / "scripts" / name).read_text(encoding="utf-8")))


@dataclasses.dataclass(frozen=True)
class _Invocation:
    command: str  # "guideline cds call", "scripts/server", ... or "guideline <unknown words>"
    known: bool
    flags: frozenset[str]
    text: str


def _guideline_command(words: list[str]) -> tuple[str, bool]:
    """The command path the words after `guideline` name (longest match), and whether it exists."""
    names = [w for w in words if not w.startswith("-")][:2]
    if not words or words[0].startswith("-"):
        return "guideline", True
    for n in (2, 1):
        if tuple(names[:n]) in commands() or (n == 1 and names[:1] and any(p[0] == names[0] for p in commands())):
            return " ".join(["guideline", *names[:n]]), True
    return " ".join(["guideline", *names]), False


def _invocations(code: str, span: bool) -> Iterator[_Invocation]:
    """Each command a piece of code runs: `guideline ...` (also as `.venv/bin/guideline` or `.../cli/main.py`),
    `scripts/NAME ...`, and in an inline span a bare subcommand with flags (`recommend --json`, `start --ehr`)."""
    tokens = code.split()
    starts: list[tuple[int, str]] = []
    for i, tok in enumerate(tokens):
        name = tok.removeprefix("./")
        if name == "guideline" or name.endswith((".venv/bin/guideline", "guideline/cli/main.py")):
            starts.append((i, "guideline"))
        elif re.fullmatch(r"scripts/[\w.-]+", name):
            starts.append((i, name))
    if not starts and span and tokens and FLAG.search(code):
        if tokens[0] in {p[0] for p in commands()}:
            starts, tokens = [(0, "guideline")], ["guideline", *tokens]
        elif tokens[0] in SERVER_ACTIONS:
            starts, tokens = [(0, "scripts/server")], ["scripts/server", *tokens]
    for n, (i, kind) in enumerate(starts):
        end = starts[n + 1][0] if n + 1 < len(starts) else len(tokens)
        words = tokens[i + 1 : end]
        cut = next((j for j, w in enumerate(words) if w in SHELL_SEPARATORS), len(words))
        words = words[:cut]
        flags = frozenset(f for w in words for f in FLAG.findall(w) if w.startswith(f))
        text = " ".join(tokens[i : i + 1 + len(words)])
        if kind == "guideline":
            command, known = _guideline_command(words)
        else:
            command, known = kind, (ROOT / kind).is_file()
        yield _Invocation(command, known, flags, text)


def _doc_invocations(doc: Path) -> list[_Invocation]:
    text = _text(doc)
    spans = set(CODE_SPAN.findall(FENCE.sub("", text)))
    return [inv for code in _code_texts(text) for inv in _invocations(code, code in spans)]


def _command_flags(command: str) -> set[str]:
    """The flags a documented command accepts (guideline's own --help/--version everywhere)."""
    top = {s for a in make_parser()._actions for s in a.option_strings}
    if command.startswith("scripts/"):
        return _script_flags(command.removeprefix("scripts/")) | {"--help"}
    path = tuple(command.split()[1:])
    if path in commands():
        return _options(commands()[path]).visible | top
    return top  # `guideline` or a command group (`guideline cds`): only --help/--version


def test_invocation_scan_sees_commands_and_flags() -> None:
    """Verify that the code scan finds invocations in spans, blocks, after env assignments and as bare subcommands."""
    found = list(_invocations("GUIDELINE_TOKEN=x guideline cds call --patient P --json | jq . > out", span=False))
    assert [(i.command, i.known, set(i.flags)) for i in found] == [
        ("guideline cds call", True, {"--patient", "--json"})
    ]
    found = list(
        _invocations("PYSPARK_PYTHON=p spark-submit --master M /o/guideline/cli/main.py population-spark E", False)
    )
    assert [(i.command, set(i.flags)) for i in found] == [("guideline population-spark", set())]
    assert [i.command for i in _invocations("start --ehr", span=True)] == ["scripts/server"]
    assert [i.command for i in _invocations("recommend --json", span=True)] == ["guideline recommend"]
    assert [i.known for i in _invocations("guideline frobnicate --x", span=True)] == [False]
    assert not list(_invocations("guideline.toml", span=True)) and not list(_invocations("start", span=True))


@pytest.mark.parametrize("doc", DOC_FILES, ids=_rel)
def test_docs_run_only_real_commands(doc: Path) -> None:
    """Verify that every command the doc shows (`guideline ...`, `scripts/...`) exists."""
    unknown = sorted({i.text for i in _doc_invocations(doc) if not i.known})
    assert not unknown, f"{_rel(doc)} shows commands that do not exist: {unknown}"


@pytest.mark.parametrize("doc", DOC_FILES, ids=_rel)
def test_docs_give_each_command_only_its_own_flags(doc: Path) -> None:
    """Verify that every flag shown with a command (`guideline apply --at`, `scripts/server start --ehr`) is one
    that command accepts."""
    invocations = [i for i in _doc_invocations(doc) if i.known]
    wrong = sorted({f"`{i.text}`: {sorted(bad)}" for i in invocations if (bad := i.flags - _command_flags(i.command))})
    assert not wrong, f"{_rel(doc)} shows flags a command does not take: {wrong}"


@pytest.mark.parametrize("doc", DOC_FILES, ids=_rel)
def test_every_flag_in_the_docs_exists(doc: Path) -> None:
    """Verify that every --flag the doc mentions anywhere is offered by one of the project's commands."""
    unknown = sorted(set(FLAG.findall(_text(doc))) - _known_flags())
    assert not unknown, f"{_rel(doc)} mentions flags no command offers: {unknown}"


@pytest.mark.parametrize("doc", DOC_FILES, ids=_rel)
def test_docs_name_only_real_environment_variables(doc: Path) -> None:
    """Verify that every GUIDELINE_* variable the doc names is read by the code (and so documented in
    docs/configuration.md)."""
    named = set(re.findall(r"\bGUIDELINE_[A-Z0-9_]*[A-Z0-9]\b", _text(doc)))
    unknown = sorted(named - set(_env_reads()))
    assert not unknown, f"{_rel(doc)} names environment variables nothing reads: {unknown}"


EXIT_MENTION = re.compile(r"\bexit(?:s|ing)?(?: codes?:?)?\s+(\d+(?:(?:,\s*|\s+or\s+|\s+and\s+)\d+)*)\b", re.I)
SCRIPT_EXIT = re.compile(r"`(?:\./)?scripts/([\w-]+)`[^.;`]*?\bexits? (\d+)\b")


@pytest.mark.parametrize("doc", DOC_FILES, ids=_rel)
def test_docs_mention_only_real_exit_codes(doc: Path) -> None:
    """Verify that every `exit N` in the doc is an exit code of the code (ExitCode or Ctrl-C), and that a script
    said to exit N has an `exit N`."""
    text = " ".join(_text(doc).split())
    said = {int(n) for m in EXIT_MENTION.findall(text) for n in re.findall(r"\d+", m)}
    assert not said - set(exit_codes()), (
        f"{_rel(doc)} mentions exit codes that do not exist: {sorted(said - set(exit_codes()))}"
    )
    for script, code in SCRIPT_EXIT.findall(text):
        source = (ROOT / "scripts" / script).read_text(encoding="utf-8")
        assert re.search(rf"\bexit {code}\b", source), f"{_rel(doc)}: scripts/{script} never exits {code}"


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(doc: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file (lowercase, punctuation dropped, spaces to
    hyphens, repeats numbered)."""
    seen: dict[str, int] = {}
    for line in FENCE.sub("", _text(doc)).splitlines():
        if re.match(r"#{1,6} ", line):
            slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            seen[slug] = seen.get(slug, -1) + 1
            if seen[slug]:
                seen[f"{slug}-{seen[slug]}"] = 0
    return set(seen)


@pytest.mark.parametrize("doc", DOC_FILES, ids=_rel)
def test_relative_links_resolve(doc: Path) -> None:
    """Verify that every relative link (and image) in the doc points at a file in the checkout, and every #anchor
    at a heading of that file."""
    broken = []
    for target in LINK.findall(FENCE.sub("", _text(doc))):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists() or not dest.is_relative_to(ROOT):
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no heading with that anchor in {_rel(dest)})")
    assert not broken, f"{_rel(doc)} has broken links: {broken}"


@pytest.mark.parametrize("doc", DOC_FILES, ids=_rel)
def test_paths_named_in_the_docs_exist(doc: Path) -> None:
    """Verify that every concrete path the doc names in code (`tests/integration/test_cds_jwt.py`) exists, build
    output (dist/, target/, .run/) aside."""
    code = " ".join(_code_texts(_text(doc)))
    spans = [w.strip("(),;:'\"") for w in code.split()]
    top = {p.name for p in ROOT.iterdir()} - IGNORED_TOP
    named = {s for s in spans if "/" in s and s.split("/")[0] in top and not re.search(r"[<{…*|$]|\.\.\.|/target/", s)}
    missing = sorted(p for p in named if not (ROOT / p.rstrip("/").split("::")[0]).exists())
    assert not missing, f"{_rel(doc)} names paths that do not exist: {missing}"


def test_every_doc_is_linked_from_the_readme() -> None:
    """Verify that the README links CONTRIBUTING.md and every docs/*.md, so none is an orphan."""
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in LINK.findall(_readme())}
    orphans = [_rel(d) for d in DOC_FILES[1:] if d.resolve() not in linked]
    assert not orphans, f"the README does not link {orphans}"


# ---------------------------------------------------------------- the README itself

README_MAX_LINES = 200


def test_readme_is_short() -> None:
    """Verify that the README stays a page a newcomer reads: at most 200 lines, the rest in docs/."""
    n = len(_readme().splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES}): move detail to docs/"


def test_readme_lists_every_command_once() -> None:
    """Verify that the README's command table has one line for each guideline command and each script, and no
    other."""
    rows = _table(_section("## Commands"))
    listed = [m.group(1) for r in rows if (m := CODE_SPAN.fullmatch(r[0]))]
    assert len(listed) == len(rows), "each row of README 'Commands' is one command in a code span"
    expected = {"guideline " + " ".join(p) for p in commands()}
    expected |= {f"scripts/{p.name}" for p in (ROOT / "scripts").iterdir() if p.is_file()}
    assert len(listed) == len(set(listed)), (
        f"README 'Commands' repeats {sorted(c for c in listed if listed.count(c) > 1)}"
    )
    assert set(listed) == expected, (
        f"README 'Commands' misses {sorted(expected - set(listed))} and lists unknown {sorted(set(listed) - expected)}"
    )


def test_readme_shows_the_screenshot() -> None:
    """Verify that the README shows the site's screenshot (the picture scripts/screenshot keeps current)."""
    assert "![Index page](docs/screenshot-index.png)" in _readme()
