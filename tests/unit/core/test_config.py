"""Verify reading guideline.toml: the project root, required keys, and clear errors for bad configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from guideline.core import config as config_mod
from guideline.core.config import CONFIG_FILE, find_root, load_config
from guideline.core.errors import BadInputError, ExitCode

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = """
[package]
id = "example.fhir.test"
name = "Test"
title = "A test package"
pathway = "TestPathway"
canonical = "http://example.org/fhir/test"
version = "1.2.3"
date = "2026-01-02"
status = "draft"
experimental = true
publisher = "Tests"
contact_url = "http://example.org"
license = "Apache-2.0"
jurisdiction = "001"
"""
CQL = """
[cql]
options_file = "cql/options.json"
fhir_version = "4.0.1"
fhirhelpers_version = "4.0.1"
"""


def _project(tmp_path: Path, toml: str = PACKAGE + CQL, options: str | None = '{"options": []}') -> Path:
    (tmp_path / CONFIG_FILE).write_text(toml, encoding="utf-8")
    if options is not None:
        (tmp_path / "cql").mkdir()
        (tmp_path / "cql" / "options.json").write_text(options, encoding="utf-8")
    return tmp_path


def test_load_config_reads_every_key(tmp_path: Path) -> None:
    """Verify that a complete config loads with the package identity, options and derived folders."""
    cfg = load_config(_project(tmp_path))
    assert cfg.root == tmp_path.resolve()
    assert cfg.package.version == "1.2.3" and cfg.package.experimental is True
    assert cfg.cql_options == {"options": []}
    assert cfg.fhir_version == cfg.fhirhelpers_version == "4.0.1"
    assert cfg.cql_dir == cfg.root / "cql" and cfg.resources_dir == cfg.root / "fhir_resources"
    assert cfg.cases_dir == cfg.root / "tests" / "cases"
    assert cfg.canonical_for("Library", "A") == "http://example.org/fhir/test/Library/A"


def test_the_project_config_loads() -> None:
    """Verify that the checkout's own guideline.toml is complete."""
    cfg = load_config(ROOT)
    assert cfg.package.pathway and cfg.package.canonical.startswith("http")


def test_find_root_walks_up_from_a_subfolder(tmp_path: Path) -> None:
    """Verify that the root is the nearest folder upwards holding guideline.toml."""
    _project(tmp_path)
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_root(deep) == tmp_path.resolve()
    assert load_config(deep).root == tmp_path.resolve()


def test_find_root_defaults_to_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Verify that without a start folder the search begins in the current directory."""
    _project(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert find_root() == tmp_path.resolve()


def test_find_root_falls_back_to_the_checkout(tmp_path: Path) -> None:
    """Verify that outside any project the checkout the package runs from is used (editable install)."""
    assert find_root(tmp_path) == ROOT


def test_no_config_anywhere_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Verify that with no guideline.toml upwards nor in the checkout, the error says where it looked."""
    monkeypatch.setattr(config_mod, "__file__", str(tmp_path / "site-packages" / "guideline" / "core" / "config.py"))
    with pytest.raises(BadInputError) as err:
        find_root(tmp_path)
    assert f"no {CONFIG_FILE} found in {tmp_path.resolve()}" in err.value.message
    assert "run from the project checkout" in err.value.message
    assert err.value.exit_code == ExitCode.BAD_INPUT


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[package\nid = 1", "cannot read project config"),
        ("id = ", "cannot read project config"),
        (CQL, "missing or unexpected key 'package'"),
        (PACKAGE, "missing or unexpected key 'cql'"),
        (PACKAGE.replace('pathway = "TestPathway"\n', "") + CQL, "missing or unexpected key"),
        (PACKAGE.replace('license = "Apache-2.0"', 'license = "x"\nsurprise = 1') + CQL, "unexpected keyword argument"),
        (PACKAGE + CQL.replace('options_file = "cql/options.json"\n', ""), "missing or unexpected key 'options_file'"),
        ('package = "flat"\n' + CQL, "missing or unexpected key"),
    ],
    ids=[
        "toml-syntax",
        "toml-no-value",
        "no-package",
        "no-cql",
        "missing-pathway",
        "unknown-key",
        "no-options",
        "flat",
    ],
)
def test_invalid_configs_are_one_clear_line(tmp_path: Path, toml: str, expected: str) -> None:
    """Verify that broken or incomplete configs are a bad-input error naming the file and the problem."""
    _project(tmp_path, toml)
    with pytest.raises(BadInputError) as err:
        load_config(tmp_path)
    assert err.value.message.startswith(str(tmp_path.resolve() / CONFIG_FILE))
    assert expected in err.value.message
    assert "\n" not in err.value.message


@pytest.mark.parametrize(("options", "expected"), [(None, "No such file"), ("{nope", "Expecting property name")])
def test_unreadable_translator_options(tmp_path: Path, options: str | None, expected: str) -> None:
    """Verify that a missing or invalid translator options file is named with the reason."""
    _project(tmp_path, options=options)
    with pytest.raises(BadInputError) as err:
        load_config(tmp_path)
    assert err.value.message.startswith(str(tmp_path.resolve() / "cql" / "options.json"))
    assert "cannot read translator options" in err.value.message and expected in err.value.message


def test_non_utf8_config_is_a_clear_error(tmp_path: Path) -> None:
    """Verify that a guideline.toml that is not UTF-8 is a bad-input error, not a traceback."""
    (tmp_path / CONFIG_FILE).write_bytes(b'[package]\nname = "\xff"\n')
    with pytest.raises(BadInputError, match="cannot read project config"):
        load_config(tmp_path)
