"""Structure of the package: stages import one way, no cycles, docstrings, no overlong functions."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "guideline"
# The pipeline, upstream first: a module may import its own stage or an earlier one, never a later one.
STAGES = ("core", "content", "validation", "evaluation", "remote", "render", "cli")
MAX_FUNCTION_LINES = 60
# A function longer than MAX_FUNCTION_LINES says why in a comment right above its `def` (or decorator).
LONG_MARKER = "# Long:"


def _modules(*roots: Path) -> Iterator[tuple[str, Path]]:
    for root in roots or (PACKAGE,):
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            yield name, path


def _stage(module: str) -> int:
    parts = module.split(".")
    if parts == ["guideline"]:
        return -1  # the package root holds only __version__; anything may read it
    if len(parts) < 2 or parts[1] not in STAGES:
        return len(STAGES)  # guideline/__init__ and __main__ sit above every stage
    return STAGES.index(parts[1])


def _imports(path: Path) -> Iterator[tuple[str, int, bool]]:
    """(imported guideline module, line, at module level) for every import of our own code."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "guideline" or node.module.startswith(("guideline.", "tools")):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    yield (full if _is_module(full) else node.module), node.lineno, id(node) in top
        elif isinstance(node, ast.ImportFrom) and node.level:
            yield f"(relative import, level {node.level})", node.lineno, id(node) in top
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(("guideline", "tools")):
                    yield alias.name, node.lineno, id(node) in top


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


def test_imports_flow_one_way() -> None:
    """Verify that no module imports a later stage, the developer tools, or uses relative imports."""
    problems = []
    for name, path in _modules():
        for target, line, _ in _imports(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            if not target.startswith("guideline"):
                problems.append(f"{where}: imports {target} (only absolute imports of guideline.* are allowed)")
            elif _stage(target) > _stage(name):
                problems.append(f"{where}: {name} ({STAGES[_stage(name)]}) imports the later stage {target}")
    assert not problems, "\n".join(problems)


def test_no_import_cycles_and_no_hidden_imports() -> None:
    """Verify that our modules form no import cycle and import each other only at module level."""
    graph: dict[str, set[str]] = {}
    problems = []
    for name, path in _modules():
        graph.setdefault(name, set())
        for target, line, top in _imports(path):
            if not top:
                problems.append(f"{path.relative_to(ROOT)}:{line}: import of {target} inside a function")
            if target != name and target.startswith("guideline"):
                graph[name].add(target)
    # Depth-first search for a back edge; report the cycle's modules.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                problems.append("import cycle: " + " -> ".join([*stack[stack.index(t) :], t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not problems, "\n".join(problems)


def _private_uses(path: Path) -> Iterator[tuple[int, str]]:
    """(line, `module._name`) for every private name of another of our modules that `path` imports or reads."""
    tree = ast.parse(path.read_text())
    ours = ("guideline", "tools")
    aliases: dict[str, str] = {}  # local name -> our module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ours:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if _is_module(full):
                    aliases[alias.asname or alias.name] = full
                elif _is_private(alias.name):
                    yield node.lineno, full
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in ours:
                    aliases[alias.asname or alias.name] = alias.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            base = ast.unparse(node.value)
            if base in aliases or base.split(".")[0] in ours:
                yield node.lineno, f"{aliases.get(base, base)}.{node.attr}"


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_module_uses_another_modules_private_names() -> None:
    """Verify that no module of the package or the tools imports or reads another module's `_private` names.

    A leading underscore says "only this module relies on it": a name another module needs is
    public, documented and kept stable. (Tests may reach into the module they test; they are
    not checked here.)
    """
    problems = [
        f"{path.relative_to(ROOT)}:{line}: uses {target}; make it public (no underscore) where it is defined"
        for _, path in _modules(PACKAGE, ROOT / "tools")
        for line, target in _private_uses(path)
    ]
    assert not problems, "\n".join(problems)


def _documented(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text())
    rel = path.relative_to(ROOT)
    if not ast.get_docstring(tree):
        yield f"{rel}: module has no docstring"
    for node in tree.body:
        yield from _missing_docstrings(node, rel, public_parent=True)


def _missing_docstrings(node: ast.AST, rel: Path, public_parent: bool) -> Iterator[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        public = public_parent and not node.name.startswith("_")
        if public and not ast.get_docstring(node):
            yield f"{rel}:{node.lineno}: {node.name} has no docstring"
        if isinstance(node, ast.ClassDef):
            for child in node.body:
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_trivial_method(child):
                    continue
                yield from _missing_docstrings(child, rel, public)


def _is_trivial_method(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    # Dunder methods and properties say what they are by their name.
    dunder = fn.name.startswith("__") and fn.name.endswith("__")
    prop = any(isinstance(d, ast.Name) and d.id == "property" for d in fn.decorator_list)
    return dunder or prop


def test_public_api_is_documented() -> None:
    """Verify that every module, public class and public function of the package has a docstring."""
    problems = [p for _, path in _modules() for p in _documented(path)]
    assert not problems, f"{len(problems)} missing docstrings:\n" + "\n".join(problems)


@pytest.mark.parametrize("stage", STAGES)
def test_functions_are_short_or_say_why(stage: str) -> None:
    """Verify that no function is longer than 60 lines unless a `# Long:` comment above it says why."""
    problems = []
    for path in sorted((PACKAGE / stage).rglob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno:
                length = node.end_lineno - node.lineno + 1
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                above = lines[first - 2].strip() if first >= 2 else ""
                if length > MAX_FUNCTION_LINES and not above.startswith(LONG_MARKER):
                    problems.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.name} is {length} lines")
    assert not problems, "\n".join(problems)
