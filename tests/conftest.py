"""Shared fixtures: one CQL worker for the session, the project config, the local server URL."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from guideline.config import Config, load_config
from guideline.cql import Engine


@pytest.fixture(scope="session")
def config() -> Config:
    return load_config()


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    with Engine() as eng:
        yield eng


@pytest.fixture(scope="session")
def server_url() -> str:
    """The FHIR base of the local HAPI server that scripts/test started."""
    url = os.environ.get("GUIDELINE_TEST_SERVER")
    if not url:
        pytest.fail(
            "GUIDELINE_TEST_SERVER is not set: run ./scripts/test, or start a server with "
            "`scripts/server start` and export GUIDELINE_TEST_SERVER=<its URL>, or deselect with -m 'not server'"
        )
    return url.rstrip("/")
