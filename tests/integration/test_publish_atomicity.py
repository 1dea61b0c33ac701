"""Verify that a publish interrupted by killing the server leaves nothing partial, and a re-publish completes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from guideline.content.cql import Engine
from guideline.content.package import build_package
from guideline.core.config import Config
from guideline.core.errors import GuidelineError
from guideline.remote.apply import apply_patient, recommendation_plans
from guideline.remote.http import Client, RetryPolicy
from guideline.remote.patients import days_until, load_patient, roll_dates
from guideline.remote.publish import publish_resources
from tests.support import ROOT
from tests.support.deploy import db_args
from tests.support.netutil import free_port

# Full tier only: two server starts and 3,000 resources written twice (about 2 minutes on 2 cores) to prove the
# database's transaction holds when the JVM is killed. The default tier keeps publish's own logic (one transaction
# bundle, refused before contacting the server, re-publish a no-op) in test_publish.py and test_server_cases.py.
pytestmark = [pytest.mark.server, pytest.mark.full]

# Enough resources that the server is still inside the write transaction when it is killed (~6 ms
# each on 2 cores). ActivityDefinitions, not ValueSets: HAPI indexes ValueSet codes (~50 ms each).
BULK = 3000
BULK_TYPE = "ActivityDefinition"


def _server(cmd: str, port: int, *extra: str) -> str:
    env = {**os.environ, "GUIDELINE_SERVER_PORT": str(port)}
    proc = subprocess.run(
        [str(ROOT / "scripts" / "server"), cmd, *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )
    assert proc.returncode == 0, f"scripts/server {cmd} failed:\n{proc.stderr[-3000:]}"
    return proc.stdout.strip()


@pytest.fixture()
def data_server(tmp_path: Path) -> Iterator[tuple[str, int, Path]]:
    port = free_port()
    data = tmp_path / "h2"
    url = _server("start", port, "--data", str(data), *db_args())
    try:
        yield url, port, data
    finally:
        _server("stop", port)


def _bulk(config: Config) -> list[dict[str, Any]]:
    base, version = config.package.canonical, config.package.version
    return [
        {
            "resourceType": BULK_TYPE,
            "id": f"bulk-{i:04d}",
            "url": f"{base}/{BULK_TYPE}/bulk-{i:04d}",
            "version": version,
            "name": f"Bulk{i:04d}",
            "status": "draft",
            "kind": "ServiceRequest",
            "code": {"coding": [{"system": "http://loinc.org", "code": f"{i}-{i % 10}"}]},
        }
        for i in range(BULK)
    ]


def _count(client: Client, query: str) -> int:
    total: int = client.get_json(query, params={"_summary": "count"})["total"]
    return total


def test_killed_mid_publish_leaves_nothing_partial(
    data_server: tuple[str, int, Path], config: Config, engine: Engine
) -> None:
    """Verify that killing the server during the publish transaction stores none of it, and publishing again
    after a restart stores exactly one current copy of every resource, with cases still passing."""
    url, port, data = data_server
    pkg = build_package(config, engine)
    resources = [*pkg.resources, *_bulk(config)]
    pid = int((ROOT / ".run" / f"server-{port}.pid").read_text().split()[0])
    client = Client(url, retry=RetryPolicy(attempts=2, base_delay_s=0.1, total_budget_s=5))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            publish_resources(client, resources)
        except (GuidelineError, OSError) as e:
            failure.append(e)

    sent_before = client.requests_sent
    t = threading.Thread(target=run)
    t.start()
    # metadata + one lookup batch, then the write transaction: kill once the transaction is in flight.
    deadline = time.monotonic() + 120
    while client.requests_sent < sent_before + 3 and t.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.requests_sent >= sent_before + 3, "publish never reached its write transaction"
    time.sleep(1.0)
    os.kill(pid, signal.SIGKILL)
    t.join(timeout=60)
    assert not t.is_alive()
    assert failure, "the publish should have failed: its server was killed mid-transaction"

    url = _server("start", port, "--data", str(data), *db_args())
    with Client(url) as c:
        want = len([r for r in resources if r["resourceType"] == BULK_TYPE])
        stored = _count(c, BULK_TYPE)
        assert stored in (0, want), f"{stored} of {want} {BULK_TYPE}s survived: the transaction was applied partially"
        result = publish_resources(c, resources)
        assert result.writes == len(resources) - result.counts().get("unchanged", 0)
        for r in resources[:: max(1, len(resources) // 50)]:
            assert _count(c, f"{r['resourceType']}?url={r['url']}") == 1, r["id"]
        assert _count(c, BULK_TYPE) == want
        # The knowledge still works after the crash: one case through $apply.
        case = ROOT / "tests" / "cases" / "r5-child"
        expected = json.loads((case / "expected.json").read_text())
        load_patient(c, roll_dates(json.loads((case / "patient.json").read_text()), days_until(expected["at"])))
        doc = apply_patient(c, "", "r5-child", recommendation_plans(c, config.package.pathway))
        assert sorted(r["id"] for r in doc["recommendations"]) == sorted(expected["recommendations"])
