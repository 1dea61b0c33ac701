"""Integration fixtures: the published package on the test server, and a test EHR (a second, token-protected server)."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from guideline.content.cql import Engine
from guideline.content.package import build_package
from guideline.core.config import Config
from guideline.remote.apply import recommendation_plans
from guideline.remote.cds import discover
from guideline.remote.http import Client
from guideline.remote.publish import publish_resources
from tests.support import ROOT
from tests.support.cdscards import Knowledge
from tests.support.deploy import db_args
from tests.support.netutil import free_port
from tests.support.strictehr import StrictLog, strict_ehr


@dataclass(frozen=True)
class Ehr:
    """A running test EHR: its FHIR base and the bearer token it requires."""

    url: str
    token: str


@dataclass(frozen=True)
class StrictEhr(Ehr):
    """The test EHR behind the strict proxy (tests/support/strictehr.py): CDS Hooks 2.0's prefetch subset only."""

    log: StrictLog


def _publish(server_url: str, config: Config, engine: Engine) -> dict[str, Any]:
    """Publish the package on `server_url` and wait until its recommendations are registered as CDS services."""
    pkg = build_package(config, engine)
    with Client(server_url) as client:
        publish_resources(client, pkg.resources)
        plans = recommendation_plans(client, config.package.pathway)
        # The services the server offers: informational ones (R6) are not listed by default (project safety rule 17).
        want = set(Knowledge(pkg.resources).card_plans(p["id"] for p in plans))
        deadline = time.monotonic() + 120
        have: set[str] = set()
        services: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            services = discover(client)
            have = {s["id"] for s in services}
            if want <= have:
                break
            time.sleep(1)
        assert want <= have, f"CDS services not registered within 120 s: missing {sorted(want - have)}"
    templates = {s["id"]: dict(s.get("prefetch") or {}) for s in services}
    return {"pkg": pkg, "plans": plans, "templates": templates, "url": server_url}


@pytest.fixture(scope="session")
def published(server_url: str, config: Config, engine: Engine) -> dict[str, Any]:
    """The package published on the test server, its recommendation PlanDefinitions registered as CDS services."""
    return _publish(server_url, config, engine)


@pytest.fixture(scope="session")
def apply_published(config: Config, engine: Engine) -> Iterator[dict[str, Any]]:
    """A second knowledge server whose CDS services evaluate with clinical reasoning's $apply (the old path,
    `guideline.cds.evaluator: apply`), the package published on it: the reference the cards of the evaluation
    core (the test server's default) must equal. Started on a free port, stopped at the end of the session."""
    env = {**os.environ, "GUIDELINE_SERVER_PORT": str(free_port()), "GUIDELINE_CDS_EVALUATOR": "apply"}
    script = str(ROOT / "scripts" / "server")
    # H2 whatever the database under test: the reference evaluates the request's data, not the database's.
    started = subprocess.run([script, "start"], env=env, capture_output=True, text=True, check=False)
    try:
        assert started.returncode == 0, f"the $apply server did not start: {started.stderr[-2000:]}"
        yield _publish(started.stdout.strip().rstrip("/"), config, engine)
    finally:
        subprocess.run([script, "stop"], env=env, capture_output=True, check=False)


@pytest.fixture(scope="session")
def ehr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ehr]:
    """A test EHR: GUIDELINE_TEST_EHR (+ _TOKEN_FILE) if set, else one started for the session.

    Started on GUIDELINE_TEST_EHR_PORT, or a free port; stopped at the end of the session.
    """
    url = os.environ.get("GUIDELINE_TEST_EHR")
    if url:
        token_file = os.environ.get("GUIDELINE_TEST_EHR_TOKEN_FILE", "")
        if not token_file:
            pytest.fail("GUIDELINE_TEST_EHR is set without GUIDELINE_TEST_EHR_TOKEN_FILE (the token it requires)")
        with open(token_file, encoding="utf-8") as f:
            yield Ehr(url.rstrip("/"), f.readline().strip())
        return
    token = secrets.token_urlsafe(24)
    token_path = tmp_path_factory.mktemp("ehr") / "token"
    token_path.write_text(token + "\n", encoding="utf-8")
    token_path.chmod(0o600)
    env = {**os.environ, "GUIDELINE_SERVER_PORT": os.environ.get("GUIDELINE_TEST_EHR_PORT") or str(free_port())}
    script = str(ROOT / "scripts" / "server")
    started = subprocess.run(
        [script, "start", "--ehr", "--token-file", str(token_path)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        assert started.returncode == 0, f"test EHR did not start: {started.stderr[-2000:]}"
        yield Ehr(started.stdout.strip(), token)
    finally:
        subprocess.run([script, "stop"], env=env, capture_output=True, check=False)


@pytest.fixture(scope="module")
def fresh_server() -> Iterator[str]:
    """A second, empty knowledge server for one test module (its FHIR base URL), stopped afterwards.

    For tests whose subject is what a server does with an empty database (HAPI's package installer
    finds resources by canonical url, so the session's published package would change what it does).
    """
    env = {**os.environ, "GUIDELINE_SERVER_PORT": str(free_port())}
    script = str(ROOT / "scripts" / "server")
    started = subprocess.run([script, "start", *db_args()], env=env, capture_output=True, text=True, check=False)
    try:
        assert started.returncode == 0, f"the second server did not start: {started.stderr[-2000:]}"
        yield started.stdout.strip().rstrip("/")
    finally:
        subprocess.run([script, "stop"], env=env, capture_output=True, check=False)


@pytest.fixture(scope="session")
def strict(ehr: Ehr) -> Iterator[StrictEhr]:
    """The session's test EHR as an EHR whose FHIR API serves only CDS Hooks 2.0's prefetch subset (400 otherwise),
    pages every searchset and adds OperationOutcome entries (same data, same token)."""
    log = StrictLog()
    with strict_ehr(ehr.url, log) as url:
        yield StrictEhr(url, ehr.token, log)
