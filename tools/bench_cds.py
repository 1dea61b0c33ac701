"""`scripts/bench --cds`: CDS Hooks as EHRs call it, the evaluation core vs the old $apply path side by side.

Two knowledge servers started alike (full tiered JIT) except `guideline.cds.evaluator`: `core` (the evaluation
core shared with the batch evaluator, the default) and `apply` (clinical reasoning's $apply per recommendation,
the old path). For each, on the pathway service `gl-treatment` over the scenarios of tests/cases: one client's
sequential calls with the data in prefetch (p50, and the server JVM's CPU per call from /proc); N concurrent EHR
clients (threads, one HTTP session each) on (a) prefetch (the EHR resolved the templates once per patient, with
the Medications they reference: the templates carry no _include) and (b) fhirServer + fhirAuthorization (the
service reads the test EHR, referenced Medications by id; the EHR JVM's CPU per call and its answer time for one
call's reads are reported apart); discovery as the trivial call; the batch evaluator's CPU per patient on the same
patients; and a sampled profile (jstack) of the core server's request threads under load. The result replaces the
block between CDS_BEGIN and CDS_END in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests

from guideline.content.cql import Engine
from guideline.content.package import build_package
from guideline.core import toolchain
from guideline.core.config import load_config
from guideline.evaluation.jvm import JavaEngine
from guideline.evaluation.records import PatientRecord
from guideline.remote.cds import DEFAULT_USER, cds_base_for, discover, resolve_prefetch
from guideline.remote.http import Client, Timeouts, read_token
from guideline.remote.patients import days_until, load_patient, roll_dates
from guideline.remote.publish import publish_resources
from tools.bench import CDS_BEGIN, CDS_BLOCK, CDS_END
from tools.benchkit import log, machine, percentile

SERVICE = "gl-treatment"
GUIDANCE_MS = 500  # CDS Hooks: services should answer in about 500 ms
PATHS = ("core", "apply")


@dataclass
class Load:
    """Latencies (s) and errors of one timed phase, and the JVMs' CPU seconds spent during it."""

    seconds: float = 0.0
    lat: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)

    def row(self, name: str, clients: int) -> str:
        """A markdown table row: calls, throughput, p50/p95/p99 (ms), server CPU per call (ms), errors."""
        ms = [x * 1000 for x in self.lat]
        p = (_p(ms, 50), _p(ms, 95), _p(ms, 99))
        rate = len(ms) / self.seconds if self.seconds else 0.0
        return (
            f"| {name} | {clients} | {len(ms):,} | {rate:.1f} | {p[0]:.0f} | {p[1]:.0f} | {p[2]:.0f} "
            f"| {self.per_call('server'):.1f} | {len(self.errors)} |"
        )

    def per_call(self, jvm: str) -> float:
        """CPU milliseconds of `jvm` per successful call (NaN without calls)."""
        return self.cpu.get(jvm, float("nan")) * 1000 / len(self.lat) if self.lat else float("nan")


def jvm_cpu(url: str) -> float:
    """CPU seconds (user + system) the server JVM on `url`'s port has used (scripts/server's pid file)."""
    port = urlparse(url).port
    pid = (toolchain.repo_root() / ".run" / f"server-{port}.pid").read_text(encoding="utf-8").strip()
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scenarios() -> list[tuple[str, dict[str, Any]]]:
    """Every scenario's (patient id, bundle with dates rolled to today)."""
    out = []
    for case in sorted((toolchain.repo_root() / "tests" / "cases").iterdir()):
        if not (case / "patient.json").is_file() or not (case / "expected.json").is_file():
            continue
        bundle = json.loads((case / "patient.json").read_text(encoding="utf-8"))
        at = json.loads((case / "expected.json").read_text(encoding="utf-8"))["at"]
        pid = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
        out.append((pid, roll_dates(bundle, days_until(at))))
    return out


def publish_and_wait(url: str, resources: list[dict[str, Any]]) -> None:
    """Publish the package on a knowledge server and wait (bounded) until the pathway service is registered."""
    with Client(url, timeouts=Timeouts(read_s=300)) as client:
        publish_resources(client, resources)
        deadline = time.monotonic() + 180
        while SERVICE not in {s["id"] for s in discover(client)}:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{SERVICE} not registered on {url} within 180 s")
            time.sleep(1)


def request_bodies(server: str, ehr: str, token: str, patients: list[str]) -> dict[str, list[bytes]]:
    """The hook request of every patient per channel: 'a' (full prefetch), 'b' (fhirServer + fhirAuthorization)."""
    with Client(server) as client, Client(ehr, token=token) as data:
        templates = next(s for s in discover(client) if s["id"] == SERVICE).get("prefetch") or {}
        out: dict[str, list[bytes]] = {"a": [], "b": []}
        for pid in patients:
            context = {"userId": DEFAULT_USER, "patientId": pid}
            base = {"hook": "patient-view", "hookInstance": "bench", "context": context}
            prefetch = resolve_prefetch(data, templates, context)
            auth = {"access_token": token, "token_type": "Bearer", "expires_in": 300, "scope": "patient/*.read"}
            out["a"].append(json.dumps({**base, "prefetch": prefetch}).encode())
            out["b"].append(json.dumps({**base, "fhirServer": ehr, "fhirAuthorization": auth}).encode())
    return out


def _client_loop(
    send: Callable[[requests.Session, int], requests.Response], n: int, offset: int, until: float, into: Load
) -> None:
    """One EHR client: calls round-robin from `offset` until the deadline; records latency or the error."""
    with requests.Session() as session:
        i = offset
        while time.monotonic() < until:
            t0 = time.monotonic()
            try:
                resp = send(session, i % n)
                ok = resp.status_code == 200 and isinstance(resp.json().get("cards", resp.json().get("services")), list)
                err = "" if ok else f"HTTP {resp.status_code}"
            except (requests.RequestException, ValueError) as e:
                err = type(e).__name__
            # list.append is atomic under the GIL: the threads share `into` without a lock
            (into.errors.append(err) if err else into.lat.append(time.monotonic() - t0))
            i += 1


def run_load(
    send: Callable[[requests.Session, int], requests.Response],
    n: int,
    clients: int,
    seconds: float,
    jvms: dict[str, str] | None = None,
) -> Load:
    """`clients` threads calling `send` for `seconds` (bounded: each call has its own read timeout); the CPU the
    JVMs `jvms` (name -> FHIR base) spent meanwhile."""
    result = Load()
    before = {k: jvm_cpu(u) for k, u in (jvms or {}).items()}
    start = time.monotonic()
    until = start + seconds
    threads = [
        threading.Thread(target=_client_loop, args=(send, n, k * n // clients, until, result)) for k in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.seconds = time.monotonic() - start
    result.cpu = {k: jvm_cpu(u) - before[k] for k, u in (jvms or {}).items()}
    return result


def sequential(
    servers: dict[str, str], bodies: list[bytes], warm: int, calls: int
) -> tuple[dict[str, list[float]], dict[str, float], int]:
    """One client alternating channel-(a) calls between the servers after `warm` calls each: latencies (s), each
    server JVM's CPU seconds over the measured calls, failed calls (counted, not timed)."""
    lat: dict[str, list[float]] = {k: [] for k in servers}
    cpu: dict[str, float] = {k: 0.0 for k in servers}
    errors = 0
    with requests.Session() as session:
        for i in range(warm + calls):
            for name, url in servers.items():
                c0, t0 = jvm_cpu(url), time.monotonic()
                try:
                    resp = session.post(
                        f"{cds_base_for(url)}/{SERVICE}",
                        data=bodies[i % len(bodies)],
                        headers={"Content-Type": "application/json"},
                        timeout=60,
                    )
                    ok = resp.status_code == 200
                except requests.RequestException:
                    ok = False
                t1 = time.monotonic()
                if not ok:
                    errors += int(i >= warm)
                elif i >= warm:
                    lat[name].append(t1 - t0)
                    cpu[name] += jvm_cpu(url) - c0
    return lat, cpu, errors


def ehr_reads_ms(server: str, ehr: str, token: str, patients: list[str], rounds: int) -> list[float]:
    """How long the test EHR takes, with nothing else calling it, to answer one call's reads (the pathway
    service's templates for one patient, in order, as the service reads them): ms per patient."""
    out = []
    with Client(server) as client, Client(ehr, token=token) as data:
        templates = next(s for s in discover(client) if s["id"] == SERVICE).get("prefetch") or {}
        for _ in range(rounds):
            for pid in patients:
                t0 = time.monotonic()
                resolve_prefetch(data, templates, {"userId": DEFAULT_USER, "patientId": pid})
                out.append((time.monotonic() - t0) * 1000)
    return out


def batch_cpu_per_patient(cases: list[tuple[str, dict[str, Any]]], seconds: float) -> tuple[float, int]:
    """The batch evaluator's JVM CPU per patient (ms) walking the same scenario patients, 2 threads, after a warm-up
    of the same length: (ms per patient, patients measured)."""
    config = load_config()
    with Engine() as eng:
        pkg = build_package(config, eng)
    at = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    records = [
        PatientRecord(i, f"bench:{pid}", patient=pid, bundle_json=json.dumps(b, separators=(",", ":")))
        for i, (pid, b) in enumerate(cases)
    ]
    java = JavaEngine(pkg, config, threads=2)
    try:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            java.walk_batch(records, at)
        c0, n = java.cpu_seconds(), 0
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            results = java.walk_batch(records, at)
            bad = [r.error for r in results if r.error]
            if bad:
                raise RuntimeError(f"the batch evaluator failed: {bad[0]}")
            n += len(results)
        return (java.cpu_seconds() - c0) * 1000 / n, n
    finally:
        java.close()


# What a request thread of the server is doing, by the first frame (top down) of these packages.
PROFILE_BUCKETS = (
    ("org.opencds.cqf.cql.engine", "CQL engine (evaluation)"),
    ("org.opencds.cqf.fhir", "clinical reasoning"),
    ("org.example.gl.engine", "evaluation core (walk, drafts)"),
    ("ca.uhn.fhir.parser", "FHIR JSON parse/encode (HAPI)"),
    ("com.fasterxml.jackson", "JSON (Jackson)"),
    ("org.h2", "database (H2)"),
    ("org.hibernate", "database (Hibernate)"),
    ("ca.uhn.fhir.jpa", "HAPI JPA (read, search, create)"),
    ("org.example.gl.server", "server code (prefetch, cards, filters)"),
    ("org.apache.catalina", "HTTP (Tomcat)"),
    ("org.apache.coyote", "HTTP (Tomcat)"),
    ("org.apache.tomcat", "HTTP (Tomcat)"),
)


def sample_profile(url: str, seconds: float, every: float = 0.5) -> collections.Counter[str]:
    """Poor man's profiler: jstack the server every `every` s for `seconds`; each RUNNABLE request thread (http-nio)
    counts once for the first frame (from the top) in a PROFILE_BUCKETS package, so JDK frames count for their
    caller."""
    port = urlparse(url).port
    pid = (toolchain.repo_root() / ".run" / f"server-{port}.pid").read_text(encoding="utf-8").strip()
    counts: collections.Counter[str] = collections.Counter()
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        dump = subprocess.run(["jstack", pid], capture_output=True, text=True, timeout=30, check=False).stdout
        for block in dump.split("\n\n"):
            if "http-nio" not in block.split("\n", 1)[0] or "java.lang.Thread.State: RUNNABLE" not in block:
                continue
            frames = [ln.strip()[3:] for ln in block.splitlines() if ln.strip().startswith("at ")]
            if any("sun.nio.ch" in f or "Poller" in f or "Acceptor" in f for f in frames[:3]):
                continue  # a thread waiting in the network layer, not serving
            # the first frame outside the JDK that names a known package (JDK frames: whoever called them pays)
            bucket = next(
                (name for f in frames for prefix, name in PROFILE_BUCKETS if f.startswith(prefix)), "other (JDK only)"
            )
            counts[bucket] += 1
        time.sleep(every)
    return counts


# Long: the report is one linear list of lines
def report(r: dict[str, Any], clients: int, info: dict[str, str], cmd: str) -> str:
    """The BENCHMARKS.md block."""
    loads: dict[str, Load] = r["loads"]
    disc95 = _p([x * 1000 for x in loads["discovery"].lat], 95)
    lines = [
        CDS_BEGIN,
        "## 7. CDS Hooks as EHRs call it: the evaluation core vs the old `$apply` path (service `gl-treatment`)",
        "",
        f"Command: `{cmd}`; {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}; {info['cores']} cores, "
        f"load average at start {info['load']}. **The machine is shared**: other jobs (other builds and test runs) ran "
        "during the measurement, and the clients, both knowledge servers and the test EHR all run on the same 2 cores, "
        "so every figure is conservative and throughput is bounded by the cores, not by the service alone. Two "
        "knowledge servers started alike (full tiered JIT, `-Xmx2g -XX:+UseSerialGC`) except "
        "`guideline.cds.evaluator`: `core` (the evaluation core, `engine/`, the default) and `apply` (clinical "
        "reasoning's `$apply` per recommendation, the old path). Calls go round-robin over the "
        f"{r['n']} scenarios of `tests/cases`: (a) prefetch only (the EHR resolved the templates once per patient), "
        "(b) `fhirServer` + `fhirAuthorization` only (the service reads the test EHR, a third HAPI JVM requiring its "
        "bearer token). Server CPU: the knowledge server JVM's user + system time from /proc over the phase, per "
        "successful call. An error is any non-200 or an answer without `cards`.",
        "",
        "### One client, sequential (data in prefetch)",
        "",
        f"One client alternating channel-(a) calls between the two servers; the first {r['warm']} calls to each not "
        f"counted; {r['seq_errors']} measured calls failed.",
        "",
        "| path | calls | p50 ms | p95 ms | JVM CPU per call, ms |",
        "|---|---|---|---|---|",
    ]
    seq_lat, seq_cpu = r["seq"]
    for path in PATHS:
        ms = [x * 1000 for x in seq_lat[path]]
        cpu = seq_cpu[path] * 1000 / len(ms) if ms else float("nan")
        lines.append(f"| `{path}` | {len(ms)} | {_p(ms, 50):.0f} | {_p(ms, 95):.0f} | {cpu:.1f} |")
    core_cpu = seq_cpu["core"] * 1000 / max(1, len(seq_lat["core"]))
    apply_cpu = seq_cpu["apply"] * 1000 / max(1, len(seq_lat["apply"]))
    batch_ms, batch_n = r["batch"]
    core_load, apply_load = loads["core-a"].per_call("server"), loads["apply-a"].per_call("server")
    lines += [
        "",
        "The one-client CPU per call also carries the JVM's background work (JIT, GC, HAPI's schedulers) spread over "
        "few calls; under the 8-client load below the same JVMs spend "
        f"{core_load:.1f} ms (`core`) and {apply_load:.1f} ms (`apply`) per call (section 8's method).",
        "",
        f"Batch evaluator on the same patients (`JavaEngine`, 2 threads, {batch_n:,} patient walks after a warm-up): "
        f"**{batch_ms:.2f} ms JVM CPU per patient**. The core's pathway call under load costs "
        f"{core_load / batch_ms:.1f}× that (the `$apply` path {apply_load / batch_ms:.0f}×); old / new JVM CPU per "
        f"call: **{apply_load / core_load:.1f}×** under load, {apply_cpu / core_cpu:.1f}× one client; one-client "
        f"p50 old / new: {_p(seq_lat['apply'], 50) / _p(seq_lat['core'], 50):.1f}×.",
        "",
        f"### {clients} concurrent EHR clients",
        "",
        "| path, phase | clients | calls | calls/s | p50 ms | p95 ms | p99 ms | server CPU/call ms | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for path in PATHS:
        for ch, label in (("a", "(a) prefetch"), ("b", "(b) fhirServer")):
            load = loads[f"{path}-{ch}"]
            lines.append(load.row(f"`{path}` {label}, {load.seconds:.0f} s", clients))
    lines.append(loads["discovery"].row(f"discovery (trivial, `core`), {loads['discovery'].seconds:.0f} s", clients))
    lines.append("")
    for path in PATHS:
        for ch in ("a", "b"):
            load = loads[f"{path}-{ch}"]
            p95 = _p([x * 1000 for x in load.lat], 95)
            verdict = "within" if p95 <= GUIDANCE_MS else "**over**"
            extra = (
                f"; the test EHR's JVM spent {load.per_call('ehr'):.1f} ms CPU per call answering the reads"
                if ch == "b"
                else ""
            )
            lines.append(
                f"- `{path}` channel ({ch}): p95 {p95:.0f} ms, {verdict} CDS Hooks' ~{GUIDANCE_MS} ms guidance; "
                f"{p95 / disc95:.1f}× the trivial call's p95 ({disc95:.0f} ms); errors {len(load.errors)}{extra}"
            )
    a_core, a_apply = loads["core-a"], loads["apply-a"]

    def rate(load: Load) -> float:
        return len(load.lat) / load.seconds if load.seconds else 0.0

    ehr_ms = r["ehr_reads"]
    lines += [
        f"- old / new, {clients} clients channel (a): {rate(a_core) / max(1e-9, rate(a_apply)):.1f}× the calls/s"
        f" with the core, p95 {_p(a_apply.lat, 95) / _p(a_core.lat, 95):.1f}× lower.",
        f"- Waiting on the EHR (channel b): one call's reads (the pathway service's templates for one patient, in "
        f"order) take the test EHR p50 {_p(ehr_ms, 50):.0f} ms, p95 {_p(ehr_ms, 95):.0f} ms with nothing else "
        "running; under the load above that wait is part of every channel-(b) latency, on the same 2 cores.",
    ]
    errs = sorted({e for load in loads.values() for e in load.errors})
    if errs:
        lines.append(f"- error kinds: {', '.join(errs)}")
    prof: collections.Counter[str] = r["profile"]
    total = sum(prof.values())
    lines += [
        "",
        "### What remains (the `core` server under the channel-(a) load)",
        "",
        f"Sampled with `jstack` every 0.5 s during the `core` channel-(a) phase ({total} running request-thread "
        "samples); each sample counted for the first frame, from the top of the stack, in a known package (JDK "
        "frames count for their caller):",
        "",
        "| where | share |",
        "|---|---|",
    ]
    for name, count in prof.most_common():
        lines.append(f"| {name} | {100 * count / max(1, total):.0f} % |")
    lines += ["", r["targets"], CDS_END]
    return "\n".join(lines) + "\n"


def targets(r: dict[str, Any]) -> str:
    """The issue's targets against the figures, met or missed, in one paragraph. JVM CPU per call is the server
    JVM's CPU over the 8-client channel-(a) phase per call (section 8's method): the one-client figure also carries
    the JVM's background work (JIT, GC, HAPI's schedulers) spread over few calls."""
    seq_lat = r["seq"][0]
    batch_ms = r["batch"][0]
    a, b = r["loads"]["core-a"], r["loads"]["core-b"]
    cpu = a.per_call("server")
    rate = len(a.lat) / a.seconds if a.seconds else 0.0
    checks = [
        (f"JVM CPU per pathway call (prefetch, 8 clients) {cpu:.1f} ms", cpu <= 5, "≤ 5 ms"),
        (f"{cpu / batch_ms:.1f}× the batch CPU per patient ({batch_ms:.2f} ms)", cpu <= 3 * batch_ms, "≤ 3×"),
        (f"8 clients (a) {rate:.0f} calls/s", rate >= 150, "≥ 150"),
        (f"(a) p95 {_p([x * 1000 for x in a.lat], 95):.0f} ms", _p(a.lat, 95) <= 0.150, "≤ 150 ms"),
        (f"(b) p95 {_p([x * 1000 for x in b.lat], 95):.0f} ms", _p(b.lat, 95) <= 0.500, "≤ 500 ms"),
        (
            f"one client p50 {_p([x * 1000 for x in seq_lat['core']], 50):.0f} ms",
            _p(seq_lat["core"], 50) <= 0.015,
            "≤ 15 ms",
        ),
    ]
    met = "; ".join(f"{what} ({want}: {'met' if ok else '**missed**'})" for what, ok, want in checks)
    return f"Targets (issue 25): {met}."


def _p(values: list[float], p: float) -> float:
    """The percentile, NaN for no values (every call of a phase failed)."""
    return percentile(values, p) if values else float("nan")


# Long: the bench's sequence, bounded phase by phase
def main(argv: list[str] | None = None) -> int:
    """Set up both servers and the EHR, run the phases, write the block."""
    p = argparse.ArgumentParser(prog="scripts/bench --cds", description=__doc__)
    p.add_argument("--server", required=True, help="FHIR base of the knowledge server evaluating with the core")
    p.add_argument("--server-apply", required=True, help="FHIR base of the same server evaluating with $apply")
    p.add_argument("--ehr", required=True, help="FHIR base of the test EHR")
    p.add_argument("--ehr-token-file", type=Path, required=True)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=60, help="per path and channel (default 60)")
    p.add_argument("--quick", action="store_true", help="15 s per phase, fewer sequential calls; writes .run/")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    seconds = 15.0 if args.quick else args.seconds
    warm, calls = (10, 30) if args.quick else (30, 100)
    root = toolchain.repo_root()
    out = args.out or (root / ".run" / "BENCHMARKS.quick.md" if args.quick else root / "BENCHMARKS.md")
    info = machine()
    token = read_token(args.ehr_token_file) or ""
    cases = scenarios()
    servers = {"core": args.server, "apply": args.server_apply}
    with Engine() as eng:
        resources = build_package(load_config(), eng).resources
    for url in servers.values():
        log(f"cds: publishing the package to {url}")
        publish_and_wait(url, resources)
    log(f"cds: loading {len(cases)} scenario patients onto the test EHR")
    with Client(args.ehr, token=token) as ehr:
        for pid, bundle in cases:
            # a rerun against the same EHR (bench servers kept up) need not rewrite what is there
            if ehr.request("GET", f"Patient/{pid}", ok=(200, 404, 410)).status_code != 200:
                load_patient(ehr, bundle)
    patients = [pid for pid, _ in cases]
    bodies = request_bodies(args.server, args.ehr, token, patients)

    def post(url: str, channel: str) -> Callable[[requests.Session, int], requests.Response]:
        def send(s: requests.Session, i: int) -> requests.Response:
            hdr = {"Content-Type": "application/json"}
            return s.post(f"{cds_base_for(url)}/{SERVICE}", data=bodies[channel][i], headers=hdr, timeout=60)

        return send

    def get(s: requests.Session, i: int) -> requests.Response:
        return s.get(cds_base_for(args.server), timeout=60)

    n = len(cases)
    log("cds: warm-up, 20 s per server on (a), 10 s on (b)")
    for url in servers.values():
        run_load(post(url, "a"), n, args.clients, 20)
        run_load(post(url, "b"), n, args.clients, 10)
    log(f"cds: one client, {warm} warm-up + {calls} calls to each server, alternating")
    seq_lat, seq_cpu, seq_errors = sequential(servers, bodies["a"], warm, calls)
    loads: dict[str, Load] = {}
    profile: collections.Counter[str] = collections.Counter()
    for path, url in servers.items():
        for ch in ("a", "b"):
            log(f"cds: `{path}` channel ({ch}), {args.clients} clients, {seconds:.0f} s")
            jvms = {"server": url, "ehr": args.ehr}
            if path == "core" and ch == "a":
                sampler = threading.Thread(target=lambda u=url: profile.update(sample_profile(u, seconds - 2)))
                sampler.start()
                loads[f"{path}-{ch}"] = run_load(post(url, ch), n, args.clients, seconds, jvms)
                sampler.join()
            else:
                loads[f"{path}-{ch}"] = run_load(post(url, ch), n, args.clients, seconds, jvms)
    log("cds: discovery under the same load")
    loads["discovery"] = run_load(get, n, args.clients, min(20.0, seconds), {"server": args.server})
    log("cds: the test EHR's answer time for one call's reads")
    ehr_reads = ehr_reads_ms(args.server, args.ehr, token, patients, 1 if args.quick else 3)
    log("cds: the batch evaluator's CPU per patient on the same patients")
    batch = batch_cpu_per_patient(cases, 10.0 if args.quick else 30.0)
    r: dict[str, Any] = {
        "n": n,
        "warm": warm,
        "seq": (seq_lat, seq_cpu),
        "seq_errors": seq_errors,
        "loads": loads,
        "ehr_reads": ehr_reads,
        "batch": batch,
        "profile": profile,
    }
    r["targets"] = targets(r)
    # the servers' URLs and the token file are the bench's own (free ports, temp files): not part of the command
    cmd = "scripts/bench --cds" + (" --quick" if args.quick else "")
    CDS_BLOCK.write(out, report(r, args.clients, info, cmd))
    log(f"wrote {out}")
    bad = sum(len(load.errors) for load in loads.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
