"""The server as deployed: two HAPI nodes on one PostgreSQL behind HAProxy (scripts/server start --nodes 2 --db
postgres), writes protected by a bearer token, knowledge fresh on every node, and faults that lose nothing.

One node set serves the whole module (starting one costs ~3 minutes on 2 cores); the tests run in file order and
the fault tests come last: killing a node, stopping PostgreSQL, restarting both nodes from disk.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from guideline.content.cql import Engine
from guideline.content.package import build_package
from guideline.core.config import Config
from guideline.core.errors import GuidelineError
from guideline.remote.apply import apply_patient
from guideline.remote.cds import call
from guideline.remote.http import Client, RetryPolicy
from guideline.remote.patients import days_until, load_patient, roll_dates
from guideline.remote.publish import publish_resources
from tests.support import CASES_DIR, ROOT
from tests.support.deploy import free_port_run
from tests.support.netutil import free_port

pytestmark = pytest.mark.server

BOUNDARY_CASE = "r3-triglycerides-at-threshold"  # triglycerides exactly 150 mg/dL, threshold ">= 150"
PLAN = "GLR3Levocarnitine"
PATHWAY_SERVICE = "gl-treatment"
ACTIVITY = "GLProposeLevocarnitine"  # R3's draft MedicationRequest
FRESH_BOUND_S = 2.0  # the stated cross-node bound (the mechanism gives 0: the next evaluation re-checks)


@dataclass(frozen=True)
class NodeSet:
    """A running node set: the proxy's FHIR base, the nodes' bases, the write token, the data folder."""

    port: int
    proxy: str
    nodes: list[str]
    token: str
    token_file: Path
    data: Path


def _server(port: int, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "scripts" / "server"), *args],
        env={**os.environ, **(env or {}), "GUIDELINE_SERVER_PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def _start(port: int, token_file: Path, data: Path) -> subprocess.CompletedProcess[str]:
    return _server(
        port, "start", "--nodes", "2", "--db", "postgres", "--data", str(data), "--write-token-file", str(token_file)
    )


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeSet]:
    """Two nodes + proxy on PostgreSQL (disk-backed under a temp folder), writes protected; stopped afterwards."""
    tmp = tmp_path_factory.mktemp("nodes")
    token = secrets.token_urlsafe(24)
    token_file = tmp / "write-token"
    token_file.write_text(token + "\n", encoding="utf-8")
    token_file.chmod(0o600)
    port = free_port_run(2)
    # the cluster runs as the postgres user, which cannot enter pytest's 0700 temp folders
    data = ROOT / ".run" / f"test-nodes-{port}"
    shutil.rmtree(data, ignore_errors=True)
    started = _start(port, token_file, data)
    try:
        assert started.returncode == 0, f"node set did not start:\n{started.stderr[-3000:]}"
        assert token not in started.stderr + started.stdout, "the write token was printed"
        yield NodeSet(
            port,
            started.stdout.strip(),
            [f"http://127.0.0.1:{port + i}/fhir" for i in (1, 2)],
            token,
            token_file,
            data,
        )
    finally:
        stopped = _server(port, "stop")
        shutil.rmtree(data, ignore_errors=True)
        assert stopped.returncode == 0, stopped.stderr


def test_open_writes_stay_on_loopback_and_nodes_need_postgres() -> None:
    """Verify that scripts/server refuses a non-loopback address without a write token, and --nodes without
    PostgreSQL, each with one line saying what to add, before starting anything."""
    port = free_port()
    wide = _server(port, "start", "--bind", "192.0.2.1")  # TEST-NET-1: refused before anything binds
    assert wide.returncode == 1 and "--write-token-file" in wide.stderr, wide.stderr
    two = _server(port, "start", "--nodes", "2")
    assert two.returncode == 1 and "--db postgres" in two.stderr, two.stderr
    assert not (ROOT / ".run" / f"server-{port}.pid").exists()


def _count(client: Client, rtype: str) -> int:
    total: int = client.get_json(rtype, params={"_summary": "count"})["total"]
    return total


def _counts(base: str) -> dict[str, int]:
    with Client(base) as c:
        return {t: _count(c, t) for t in ("Library", "PlanDefinition", "ActivityDefinition", "ValueSet", "Patient")}


@pytest.fixture(scope="module")
def package(config: Config, engine: Engine) -> list[dict[str, Any]]:
    return build_package(config, engine).resources


def test_writes_need_the_token_and_nothing_is_written_without_it(nodes: NodeSet, package: list[dict[str, Any]]) -> None:
    """Verify that create, update, delete, transaction and POST /packages answer 401 without (or with a wrong)
    token and store nothing, that reads stay open, and that the token opens writes."""
    before = _counts(nodes.proxy)
    lib = next(r for r in package if r["resourceType"] == "Library")
    tx = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": lib, "request": {"method": "PUT", "url": f"Library/{lib['id']}"}}],
    }
    attempts = [
        ("POST", "/Patient", {"resourceType": "Patient"}),
        ("PUT", f"/Library/{lib['id']}", lib),
        ("DELETE", "/Patient/nobody", None),
        ("POST", "", tx),
        ("POST", "/ImplementationGuide/$install", {"resourceType": "Parameters"}),
    ]
    for auth in (None, "Bearer wrong-" + nodes.token):
        headers = {"Content-Type": "application/fhir+json"} | ({"Authorization": auth} if auth else {})
        for method, path, body in attempts:
            for base in [nodes.proxy, *nodes.nodes]:
                r = requests.request(method, base + path, json=body, headers=headers, timeout=60)
                assert r.status_code == 401, (
                    f"{method} {base}{path} with {auth and 'a bad token' or 'no token'}: {r.status_code}"
                )
                assert "WWW-Authenticate" in r.headers
        pkg = requests.post(nodes.proxy.removesuffix("/fhir") + "/packages", data=b"x", headers=headers, timeout=60)
        assert pkg.status_code == 401
    assert _counts(nodes.proxy) == before, "a refused write changed the database"
    # reads, $apply-style operations and CDS discovery stay open
    assert requests.get(nodes.proxy + "/metadata", timeout=60).status_code == 200
    assert requests.get(nodes.proxy.removesuffix("/fhir") + "/cds-services", timeout=60).status_code == 200
    with Client(nodes.proxy, token=nodes.token) as c:
        created = c.post_json("Patient", {"resourceType": "Patient", "active": True})
        assert created["id"]
    assert _counts(nodes.proxy)["Patient"] == before["Patient"] + 1


def test_publish_cli_with_and_without_the_token_file(nodes: NodeSet, tmp_path: Path) -> None:
    """Verify that `guideline publish` without --token-file is refused with nothing written, and with it publishes
    the package through node A."""
    before = _counts(nodes.nodes[0])
    cli = [str(ROOT / ".venv" / "bin" / "guideline"), "publish", "--server", nodes.nodes[0]]
    env = {k: v for k, v in os.environ.items() if k != "GUIDELINE_TOKEN"}
    refused = subprocess.run(cli, capture_output=True, text=True, timeout=600, check=False, env=env, cwd=ROOT)
    assert refused.returncode != 0
    assert "token" in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
    assert _counts(nodes.nodes[0]) == before
    done = subprocess.run(
        [*cli, "--token-file", str(nodes.token_file)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert nodes.token not in done.stdout + done.stderr
    after = _counts(nodes.nodes[1])  # node B sees what node A stored
    assert after["Library"] > before["Library"] and after["PlanDefinition"] > before["PlanDefinition"]


def _with_threshold(package: list[dict[str, Any]], mg_dl: int) -> dict[str, Any]:
    """GLCommon with the triglycerides threshold changed, in its CQL and its ELM (same url and version)."""
    lib = json.loads(json.dumps(next(r for r in package if r["resourceType"] == "Library" and r["name"] == "GLCommon")))
    for content in lib["content"]:
        text = base64.b64decode(content["data"]).decode("utf-8")
        if content["contentType"] == "text/cql":
            old = "\"Triglycerides Threshold\" System.Quantity default 150 'mg/dL'"
            assert old in text
            text = text.replace(old, old.replace("150", str(mg_dl)))
        else:
            elm = json.loads(text)
            params = elm["library"]["parameters"]["def"]
            param = next(p for p in params if p["name"] == "Triglycerides Threshold")
            assert param["default"]["value"] == 150
            param["default"]["value"] = mg_dl
            text = json.dumps(elm)
        content["data"] = base64.b64encode(text.encode("utf-8")).decode("ascii")
    return lib


def _r3(base: str, token: str, pid: str, at: str | None, cds: bool) -> bool:
    """Whether R3 (levocarnitine) fires for the boundary patient on this server: by $apply, or by its CDS service."""
    with Client(base, token=token) as c:
        if cds:
            return bool(call(c, PLAN, patient=pid)["cards"])
        doc = apply_patient(c, "", pid, [c.get_json(f"PlanDefinition/{PLAN}")], at=at)
        return any(r["id"] == PLAN for r in doc["recommendations"])


def _boundary_patient(base: str, token: str) -> tuple[str, str]:
    """Load the boundary case (dates rolled to today) and return (patient id, the case's rolled evaluation time)."""
    case = CASES_DIR / BOUNDARY_CASE
    expected = json.loads((case / "expected.json").read_text(encoding="utf-8"))
    bundle = json.loads((case / "patient.json").read_text(encoding="utf-8"))
    days = days_until(expected["at"])
    rolled = roll_dates(bundle, days)
    with Client(base, token=token) as c:
        load_patient(c, rolled)
    pid = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    return pid, str(roll_dates({"at": expected["at"]}, days)["at"])


def test_a_republish_through_node_a_is_used_by_node_b_within_the_bound(
    nodes: NodeSet, package: list[dict[str, Any]]
) -> None:
    """Verify that after publishing GLCommon with the threshold raised to 151 through node A, $apply and CDS on
    node B and through the proxy stop firing R3 for a patient at exactly 150 within FRESH_BOUND_S, and fire again
    once 150 is published back."""
    a, b = nodes.nodes
    with Client(a, token=nodes.token) as c:
        publish_resources(c, package)
    pid, at = _boundary_patient(a, nodes.token)
    # warm every cache on node B and the proxy with the original logic
    for base in (b, nodes.proxy, nodes.proxy):
        assert _r3(base, nodes.token, pid, at, cds=False), f"R3 should fire at the threshold on {base}"
        assert _r3(base, nodes.token, pid, at, cds=True)
    for mg_dl, fires in ((151, False), (150, True)):
        with Client(a, token=nodes.token) as c:
            publish_resources(
                c,
                [
                    _with_threshold(package, mg_dl)
                    if mg_dl != 150
                    else next(r for r in package if r["resourceType"] == "Library" and r["name"] == "GLCommon")
                ],
                force=True,
            )
        published = time.monotonic()
        for base in (b, nodes.proxy, nodes.proxy):
            for cds in (False, True):
                got = _r3(base, nodes.token, pid, at, cds=cds)
                while got != fires and time.monotonic() - published < FRESH_BOUND_S:
                    got = _r3(base, nodes.token, pid, at, cds=cds)
                assert got == fires, (
                    f"{base} ({'CDS' if cds else '$apply'}) still used the old threshold "
                    f"{time.monotonic() - published:.1f}s after publishing {mg_dl} mg/dL through node A"
                )


def _labels(cards: list[dict[str, Any]]) -> set[str]:
    return {card["source"]["label"] for card in cards}


def _drug_texts(cards: list[dict[str, Any]]) -> set[str]:
    """The medication text of every draft MedicationRequest the cards suggest."""
    resources = [a["resource"] for card in cards for s in card.get("suggestions", []) for a in s["actions"]]
    return {r["medicationCodeableConcept"]["text"] for r in resources if r["resourceType"] == "MedicationRequest"}


@dataclass(frozen=True)
class KnowledgeEdit:
    """One knowledge resource, one of its values, and where that value shows on the pathway service's cards."""

    rtype: str
    rid: str
    value: Callable[[dict[str, Any]], str]
    with_value: Callable[[dict[str, Any], str], dict[str, Any]]
    seen: Callable[[list[dict[str, Any]]], set[str]]


KNOWLEDGE_EDITS = {
    # CdsEvaluator's parsed PlanDefinitions: R3's card label is its title
    "plan-title": KnowledgeEdit("PlanDefinition", PLAN, lambda r: r["title"], lambda r, v: {**r, "title": v}, _labels),
    # CR's cached canonical search: R3's draft MedicationRequest is built from this ActivityDefinition
    "activity-product": KnowledgeEdit(
        "ActivityDefinition",
        ACTIVITY,
        lambda r: r["productCodeableConcept"]["text"],
        lambda r, v: {**r, "productCodeableConcept": {**r["productCodeableConcept"], "text": v}},
        _drug_texts,
    ),
}


@pytest.mark.parametrize("edit", KNOWLEDGE_EDITS)
def test_knowledge_changed_through_node_a_is_used_by_node_b_at_once(
    nodes: NodeSet, package: list[dict[str, Any]], edit: str
) -> None:
    """Verify that node B's CDS services, which keep parsed knowledge in memory (PlanDefinitions, clinical
    reasoning's knowledge reads), use a PlanDefinition or ActivityDefinition changed through node A on their very
    next call, and the old one once it is published back: R3's card title, R3's draft order."""
    e = KNOWLEDGE_EDITS[edit]
    a, b = nodes.nodes
    with Client(a, token=nodes.token) as c:
        publish_resources(c, package)
    pid, _ = _boundary_patient(a, nodes.token)
    resource = next(r for r in package if r["resourceType"] == e.rtype and r["id"] == e.rid)

    def seen_on_b() -> set[str]:
        with Client(b, token=nodes.token) as c:
            return e.seen(call(c, PATHWAY_SERVICE, patient=pid)["cards"])

    original = e.value(resource)
    assert original in seen_on_b(), "R3 should fire at the threshold (this also warms B's caches)"
    for value in (f"{original} (changed on node A)", original):
        with Client(a, token=nodes.token) as c:
            publish_resources(c, [e.with_value(resource, value)], force=True)
        got = seen_on_b()
        assert value in got, f"node B still answers from an old {e.rtype}/{e.rid}: {sorted(got)}"


def _bulk(n: int) -> list[dict[str, Any]]:
    return [
        {
            "resourceType": "ActivityDefinition",
            "id": f"deploy-bulk-{i:04d}",
            "url": f"http://example.org/fhir/deploy-test/ActivityDefinition/bulk-{i:04d}",
            "version": "1",
            "name": f"DeployBulk{i:04d}",
            "status": "draft",
            "kind": "ServiceRequest",
        }
        for i in range(n)
    ]


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _node_pid(port: int) -> int:
    return int((ROOT / ".run" / f"server-{port}.pid").read_text().split()[0])


def test_killing_a_node_mid_publish_is_all_or_nothing_and_the_other_node_serves(nodes: NodeSet) -> None:
    """Verify that kill -9 of the node running a publish transaction (sent through the proxy) stores all or none of
    it, the other node keeps answering through the proxy, and publishing again completes."""
    bulk = _bulk(2500)
    pids = {p: _node_pid(p) for p in (nodes.port + 1, nodes.port + 2)}
    client = Client(nodes.proxy, token=nodes.token, retry=RetryPolicy(attempts=1, base_delay_s=0.1, total_budget_s=5))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            publish_resources(client, bulk)
        except (GuidelineError, OSError) as e:
            failure.append(e)

    sent = client.requests_sent
    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 120
    while client.requests_sent < sent + 3 and t.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.requests_sent >= sent + 3, "publish never reached its write transaction"
    # the node inside the transaction is the one burning CPU
    t0 = {p: _cpu_ticks(pid) for p, pid in pids.items()}
    time.sleep(0.8)
    busy = max(pids, key=lambda p: _cpu_ticks(pids[p]) - t0[p])
    os.kill(pids[busy], signal.SIGKILL)
    t.join(timeout=120)
    assert not t.is_alive()
    assert failure, "the publish should have failed: the node running it was killed"
    other = next(p for p in pids if p != busy)
    time.sleep(3)  # HAProxy's health check (1 s interval, 2 failures) takes the dead node out
    for _ in range(4):  # round-robin: every request lands on the surviving node
        assert requests.get(nodes.proxy + "/metadata", timeout=60).status_code == 200
    with Client(f"http://127.0.0.1:{other}/fhir") as c:
        stored = _count(c, "ActivityDefinition?url:below=http://example.org/fhir/deploy-test")
    assert stored in (0, len(bulk)), f"{stored} of {len(bulk)} survived: the transaction was applied partially"
    with Client(nodes.proxy, token=nodes.token) as c:
        publish_resources(c, bulk)
        assert _count(c, "ActivityDefinition?url:below=http://example.org/fhir/deploy-test") == len(bulk)


def _pg(nodes: NodeSet, action: str) -> None:
    cluster = nodes.data / "postgres"
    # scripts/server keeps the cluster elsewhere when the postgres user cannot reach this folder (a closed parent)
    moved = cluster / "cluster-location"
    if moved.is_file():
        cluster = Path(moved.read_text(encoding="utf-8").strip())
    port = (cluster / "port").read_text().strip()
    bin_dir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    cmd = [str(bin_dir / "pg_ctl"), "-D", str(cluster / "data"), "-w", "-t", "60"]
    cmd += (
        ["-m", "fast", "stop"]
        if action == "stop"
        else ["-o", f"-p {port} -k {cluster} -c listen_addresses=127.0.0.1", "-l", str(cluster / "log"), "start"]
    )
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)


def _answers(base: str) -> bool:
    try:
        return requests.get(base + "/metadata", timeout=10).ok
    except requests.ConnectionError:
        return False


def _wait_for_service(base: str) -> None:
    deadline = time.monotonic() + 120
    url = base.removesuffix("/fhir") + "/cds-services"
    while PLAN not in {s["id"] for s in requests.get(url, timeout=60).json()["services"]}:
        assert time.monotonic() < deadline, f"{PLAN} not registered on {base} within 120 s"
        time.sleep(1)


def test_postgres_down_during_cds_is_a_clear_5xx_and_recovers_without_restart(
    nodes: NodeSet, package: list[dict[str, Any]]
) -> None:
    """Verify that with PostgreSQL stopped mid-way, CDS calls answer 5xx (never 200 with no cards), and answer with
    the card again within 30 s of PostgreSQL being back, on the same JVMs."""
    survivor = next(b for b in nodes.nodes if _answers(b))  # the previous test may have killed one
    with Client(survivor, token=nodes.token) as c:
        publish_resources(c, package)  # a no-op after the tests above
    _wait_for_service(survivor)
    pid, _ = _boundary_patient(survivor, nodes.token)
    url = survivor.removesuffix("/fhir") + f"/cds-services/{PLAN}"
    body = {
        "hook": "patient-view",
        "hookInstance": "x",
        "fhirServer": survivor,
        "context": {"userId": "Practitioner/example", "patientId": pid},
    }
    first = requests.post(url, json=body, timeout=120)
    assert first.status_code == 200 and first.json()["cards"], first.text[:300]
    answers: list[requests.Response] = []
    t = threading.Thread(target=lambda: answers.append(requests.post(url, json=body, timeout=120)))
    t.start()
    _pg(nodes, "stop")
    try:
        t.join(timeout=120)
        for _ in range(3):
            answers.append(requests.post(url, json=body, timeout=120))
        for r in answers:
            assert r.status_code >= 500 or (r.status_code == 200 and r.json()["cards"]), (
                f"{r.status_code} {r.text[:300]}: an answer without the card while the database is down"
            )
        assert answers[-1].status_code >= 500
    finally:
        _pg(nodes, "start")
    deadline = time.monotonic() + 30
    r = requests.post(url, json=body, timeout=120)
    while not (r.status_code == 200 and r.json()["cards"]) and time.monotonic() < deadline:
        time.sleep(1)
        r = requests.post(url, json=body, timeout=120)
    assert r.status_code == 200 and r.json()["cards"], f"not recovered 30 s after PostgreSQL came back: {r.status_code}"


def test_restarting_both_nodes_from_disk_keeps_the_package(nodes: NodeSet, package: list[dict[str, Any]]) -> None:
    """Verify that stopping the node set and starting it again on the same --data keeps the published package
    (a re-publish is a no-op) and R3 still fires for the boundary patient on both nodes."""
    with Client(nodes.proxy, token=nodes.token) as c:
        publish_resources(c, package)  # a no-op after the tests above
    stopped = _server(nodes.port, "stop")
    assert stopped.returncode == 0, stopped.stderr
    started = _start(nodes.port, nodes.token_file, nodes.data)
    assert started.returncode == 0, started.stderr[-3000:]
    with Client(nodes.proxy, token=nodes.token) as c:
        result = publish_resources(c, package, dry_run=True)
        assert result.counts() == {"unchanged": len(package)}
    pid, at = _boundary_patient(nodes.nodes[0], nodes.token)
    for base in nodes.nodes:
        assert _r3(base, nodes.token, pid, at, cds=False)
