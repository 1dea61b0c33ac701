"""Verify the shell entry points fail fast and clearly: missing prerequisites, a server that cannot start."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.netutil import free_port


def _path_without(tmp_path: Path, missing: set[str]) -> str:
    """A PATH holding only the basic tools setup uses, minus `missing`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in (
        "bash",
        "env",
        "cat",
        "sed",
        "head",
        "cut",
        "sha256sum",
        "dirname",
        "mkdir",
        "python3",
        "java",
        "mvn",
        "node",
        "npm",
        "tail",
        "grep",
    ):
        if tool in missing:
            continue
        # The real interpreter, not a version-manager shim that needs its own tools on PATH.
        found = str(Path(sys.base_prefix) / "bin" / "python3") if tool == "python3" else shutil.which(tool)
        assert found, f"{tool} is needed on this machine for the test"
        (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


@pytest.mark.parametrize("missing", ["java", "node", "mvn", "npm"])
def test_setup_names_a_missing_prerequisite(tmp_path: Path, missing: str) -> None:
    """Verify that setup exits 3 with one line naming the missing tool and how to install it."""
    env = {**os.environ, "PATH": _path_without(tmp_path, {missing})}
    proc = subprocess.run(
        [str(ROOT / "scripts" / "setup")], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.returncode == 3, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == [lines[0]] and f"missing prerequisite '{missing}'" in lines[0] and "install" in lines[0]


def test_setup_reports_every_missing_prerequisite_at_once(tmp_path: Path) -> None:
    """Verify that several missing tools are all named, one line each, before anything is installed."""
    env = {**os.environ, "PATH": _path_without(tmp_path, {"java", "node"})}
    proc = subprocess.run(
        [str(ROOT / "scripts" / "setup")], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.returncode == 3
    assert len(proc.stderr.strip().splitlines()) == 2


@pytest.mark.server
def test_server_that_does_not_come_up_fails_within_its_bound(tmp_path: Path) -> None:
    """Verify that a start timeout kills the JVM it started, exits non-zero and prints the log tail."""
    port = free_port()
    env = {**os.environ, "GUIDELINE_SERVER_PORT": str(port), "GUIDELINE_SERVER_TIMEOUT": "3"}
    proc = subprocess.run(
        [str(ROOT / "scripts" / "server"), "start"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert "last 40 lines" in proc.stderr
    status = subprocess.run(
        [str(ROOT / "scripts" / "server"), "status"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert status.stdout.strip() == "down"
    assert not (ROOT / ".run" / f"server-{port}.pid").exists()


@pytest.mark.server
def test_server_status_reports_the_running_server(server_url: str) -> None:
    """Verify that status and a second start on the same port report the running server's URL."""
    port = server_url.split(":")[2].split("/")[0]
    env = {**os.environ, "GUIDELINE_SERVER_PORT": port}
    status = subprocess.run(
        [str(ROOT / "scripts" / "server"), "status"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert (status.returncode, status.stdout.strip()) == (0, f"up {server_url}")
    again = subprocess.run(
        [str(ROOT / "scripts" / "server"), "start"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert (again.returncode, again.stdout.strip()) == (0, server_url)
    assert "already" in again.stderr
