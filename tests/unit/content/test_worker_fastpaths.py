"""Verify the worker's fast paths give exactly what the libraries they shortcut give."""

from __future__ import annotations

import json
import subprocess

from guideline.core import toolchain
from tests.support import TESTS


def test_fast_datetime_equals_cql_execution_parse() -> None:
    """Verify every dateTime the fast path builds equals cql-execution's parse of the same text."""
    script = TESTS / "support" / "fastdatetime_check.mjs"
    out = subprocess.run(  # noqa: S603 - our own script with the toolchain's node
        [toolchain.node_executable(), str(script)], capture_output=True, text=True, check=True, timeout=120
    )
    result = json.loads(out.stdout)
    assert result["bad"] == []
    # The check must exercise the fast path, and leave the odd shapes to parse.
    assert 100 < result["handled"] < result["total"]
