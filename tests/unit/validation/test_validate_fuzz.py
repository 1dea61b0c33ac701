"""Verify with hypothesis that mutated resources, bundles and bytes never crash the loaders or validator."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guideline.content.cql import Engine
from guideline.core.config import load_config
from guideline.core.errors import Finding
from guideline.validation.loading import load_subject
from guideline.validation.run import check_subject, validate
from guideline.validation.subject import Item, Subject
from tests.support.tiers import examples
from tests.support.validate_fixtures import FIXTURE, build_dist, copy_fixture

SEVERITIES = {"error", "warning", "information"}
# Values a hand-author (or a bad merge) plausibly puts where something else belongs.
TRICKY = st.sampled_from(
    [
        "",
        " ",
        "\u0000",
        "é",
        "x" * 300,
        "Library/FxNope",
        "ActivityDefinition/FxDiet|9.9",
        "text/cql-identifier",
        "http://snomed.info/sct/",
        "SNOMED",
        "urn:oid:2.16.840.1.113883.6.1",
        "2026-02-30",
        "eca-rule",
        "asap",
        "PlanDefinition",
        "Citation",
        0,
        -1,
        1e308,
        True,
        None,
        [],
        {},
        [None],
        {"resourceType": "Nope"},
    ]
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12) | TRICKY,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out.extend(_paths(v, (*path, k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(_paths(v, (*path, i)))
    return out


def _mutate(data: st.DataObject, doc: Any, rounds: int) -> Any:
    """Apply `rounds` random edits (replace, delete, insert, duplicate) at random paths of doc."""
    for _ in range(rounds):
        paths = _paths(doc)
        path = data.draw(st.sampled_from(paths))
        op = data.draw(st.sampled_from(["replace", "delete", "insert", "duplicate"]))
        if not path:
            if op == "replace":
                doc = data.draw(JSON_VALUES)
            continue
        parent = doc
        for p in path[:-1]:
            parent = parent[p]
        last = path[-1]
        if op == "replace":
            parent[last] = data.draw(JSON_VALUES)
        elif op == "delete":
            del parent[last]
        elif op == "insert" and isinstance(parent, dict):
            parent[data.draw(st.text(max_size=10) | st.sampled_from(["id", "url", "action", "content"]))] = data.draw(
                JSON_VALUES
            )
        elif op == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[last]))
    return doc


def _check(findings: list[Finding]) -> None:
    for f in findings:
        assert f.layer != "internal", f.render()
        assert f.severity in SEVERITIES, f.render()
        assert isinstance(f.file, str) and isinstance(f.location, str) and f.message, f.render()


class _Quiet:
    """A value with a short repr: hypothesis prints the fixtures of a failing example (FHIRHelpers: 1 MB)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<fixture>"


@pytest.fixture(scope="module")
def loaded(engine: Engine) -> _Quiet:
    """The fixture package, loaded once (its CQL compiled once)."""
    return _Quiet(load_subject(cfg=load_config(FIXTURE), engine=engine))


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory, engine: Engine) -> Path:
    root = copy_fixture(tmp_path_factory.mktemp("fuzz"))
    return build_dist(root, engine) / "bundle.json"


@settings(
    max_examples=examples(150),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_mutated_resources_never_crash_the_validator(loaded: _Quiet, data: st.DataObject) -> None:
    """Verify that layers 2-7 turn any mutation of any fixture resource into findings or a clean pass."""
    subject: Subject = loaded.value.subject
    items = subject.items
    index = data.draw(st.integers(0, len(items) - 1))
    victim = items[index]
    if victim.external:  # FHIRHelpers is 1 MB of base64: mutate the project's own artifacts
        index = (index + 1) % len(items)
        victim = items[index]
    mutated = _mutate(data, copy.deepcopy(victim.resource), data.draw(st.integers(1, 4)))
    if not isinstance(mutated, dict):
        mutated = {"resourceType": "Basic", "value": mutated}
    new_items = [
        *items[:index],
        Item(mutated, victim.file, victim.prefix, victim.external),
        *items[index + 1 :],
    ]
    libs = {n: copy.copy(lib) for n, lib in subject.libs.items()}
    for lib in libs.values():
        if lib.item is victim:
            lib.item = new_items[index]
    _check(check_subject(Subject(new_items, libs, subject.canonical_base)))


@settings(
    max_examples=examples(60), deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_mutated_bundles_never_crash(
    bundle_path: Path, engine: Engine, data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Verify that a mutated bundle (envelope, entries, base64 content) always validates to findings."""
    bundle = json.loads(bundle_path.read_text(encoding="utf-8"))
    entries = bundle["entry"]
    # Keep FHIRHelpers out of the mutation pool (size), but let its entry be dropped or kept.
    pool = {"entry": [e for e in entries if e["resource"]["id"] != "FHIRHelpers"], "type": bundle["type"]}
    pool = _mutate(data, pool, data.draw(st.integers(1, 4)))
    if isinstance(pool, dict):
        bundle.update(pool)
    else:
        bundle = pool
    out = tmp_path_factory.mktemp("b") / "bundle.json"
    out.write_text(json.dumps(bundle), encoding="utf-8")
    _check(validate(out, engine=engine).findings)


@settings(
    max_examples=examples(80), deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_mutated_bytes_never_crash_the_loaders(
    data: st.DataObject, tmp_path_factory: pytest.TempPathFactory, engine: Engine
) -> None:
    """Verify that truncated, spliced or flipped bytes of a resource file give findings, never a traceback."""
    raw = (FIXTURE / "fhir_resources/plandefinition/plandefinition-FxRec01.json").read_bytes()
    cut = data.draw(st.integers(0, len(raw)))
    junk = data.draw(st.binary(max_size=8))
    edited = data.draw(st.sampled_from(["truncate", "splice", "prefix"]))
    if edited == "truncate":
        raw = raw[:cut]
    elif edited == "splice":
        raw = raw[:cut] + junk + raw[cut:]
    else:
        raw = junk + raw
    out = tmp_path_factory.mktemp("raw") / "resource.json"
    out.write_bytes(raw)
    _check(validate(out, engine=engine).findings)


@pytest.fixture(scope="module")
def source_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_fixture(tmp_path_factory.mktemp("src"))


SOURCE_FILES = [
    "fhir_resources/plandefinition/plandefinition-FxRec01.json",
    "fhir_resources/library/library-FxRec01.json",
    "fhir_resources/activitydefinition/activitydefinition-FxDiet.json",
    "fhir_resources/valueset/valueset-fx-conditions.json",
]


@settings(
    max_examples=examples(100),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_mutated_source_files_never_crash_build_and_validate(
    source_project: Path, engine: Engine, data: st.DataObject
) -> None:
    """Verify that a mutated hand-authored resource goes through build_package and validate as findings."""
    rel = data.draw(st.sampled_from(SOURCE_FILES))
    path = source_project / rel
    original = (FIXTURE / rel).read_text(encoding="utf-8")
    doc = _mutate(data, json.loads(original), data.draw(st.integers(1, 4)))
    try:
        path.write_text(json.dumps(doc), encoding="utf-8")
        _check(validate(cfg=load_config(source_project), engine=engine).findings)
    finally:
        path.write_text(original, encoding="utf-8")


@pytest.mark.parametrize("content", [True, 3, "text/cql", {"contentType": "text/cql"}])
def test_library_content_that_is_not_a_list_is_a_finding(
    bundle_path: Path, engine: Engine, tmp_path: Path, content: Any
) -> None:
    """Verify that a Library whose `content` is not a list (a case the fuzzing above found) gives located findings,
    not an internal error of the cql layer."""
    bundle = json.loads(bundle_path.read_text(encoding="utf-8"))
    library = next(
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Library" and e["resource"]["id"] != "FHIRHelpers"
    )
    library["content"] = content
    out = tmp_path / "bundle.json"
    out.write_text(json.dumps(bundle), encoding="utf-8")
    findings = validate(out, engine=engine).findings
    _check(findings)
    assert any(f.severity == "error" and "content" in f.location for f in findings), [f.render() for f in findings]
