"""Shared fixtures: one CQL worker for the session, the project config, the local server URL."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from guideline.content.cql import Engine
from guideline.core.config import Config, load_config
from tests.support.tiers import is_full, tier


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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In the default tier, skip the tests marked `full`, saying how to run them."""
    if is_full():
        return
    skip = pytest.mark.skip(reason="full tier only: run ./scripts/test --full (GUIDELINE_TEST_TIER=full)")
    for item in items:
        if item.get_closest_marker("full"):
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the per-case cross-engine agreement table when the server cases ran."""
    from tests.integration.test_cds_channels import CHANNEL_AGREEMENT
    from tests.integration.test_server_cases import AGREEMENT

    tr = terminalreporter
    tr.write_line(f"test tier: {tier()} (./scripts/test --full runs every scenario on every channel and database)")
    if CHANNEL_AGREEMENT:
        channels = list(CHANNEL_AGREEMENT[0][1])
        tr.section(
            "CDS data-channel agreement (services firing and card summaries = local recommend = channel server;"
            " $apply: every response equals the $apply path's)"
        )
        tr.write_line(f"{'case':<40} " + " ".join(f"{c:<8}" for c in channels))
        for name, row in sorted(CHANNEL_AGREEMENT):
            tr.write_line(f"{name:<40} " + " ".join(f"{row.get(c, '-'):<8}" for c in channels))
        cells = [v for _, row in CHANNEL_AGREEMENT for v in row.values()]
        tr.write_line(f"{cells.count('ok')}/{len(cells)} case x channel cells agree")
    if not AGREEMENT:
        return
    tr.section(
        "cross-engine agreement (local = cql-execution, batch = Java CQL engine in batch/, "
        "$apply/CDS = HAPI clinical reasoning)"
    )
    tr.write_line(f"{'case':<40} {'local':<6} {'batch':<6} {'$apply':<7} {'--at':<5} {'cds':<5} result")
    for row in sorted(AGREEMENT):
        tr.write_line(f"{row[0]:<40} {row[1]:<6} {row[2]:<6} {row[3]:<7} {row[4]:<5} {row[5]:<5} {row[6]}")
    agree = sum(1 for r in AGREEMENT if r[6] == "agree")
    tr.write_line(f"{agree}/{len(AGREEMENT)} cases agree")
