"""Fixtures the remote-layer unit tests share: a local stub FHIR server and a record of retry waits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.remote.stub import Stub, stub_server


@pytest.fixture
def waits() -> list[float]:
    """The waits a Client's retry function was asked to sleep (tests pass `waits.append` as its sleep)."""
    return []


@pytest.fixture
def stub() -> Iterator[Stub]:
    """A stub FHIR server on a free local port for one test (a test file may override it with its own routes)."""
    with stub_server() as s:
        yield s
