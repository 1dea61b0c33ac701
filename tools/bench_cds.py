"""`scripts/bench --cds`: CDS Hooks under load as EHRs call it, and C1-only vs full tiered JIT -> BENCHMARKS.md.

Load: N concurrent EHR clients (threads, one HTTP session each) call the pathway service `gl-treatment` for the
scenarios of tests/cases, round-robin, for a bounded time per channel: (a) prefetch (the EHR resolved the
templates once per patient, as an EHR holding the chart would, with the Medications they reference: the templates
carry no _include) and (b) fhirServer + fhirAuthorization (the service reads the test EHR itself, referenced
Medications by id). The trivial call is discovery (GET /cds-services) under the same load.
JIT: one client alternates calls between two servers that differ only in -XX:TieredStopAtLevel=1, after a
warm-up on each. The result replaces the block between CDS_BEGIN and CDS_END in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from guideline.content.cql import Engine
from guideline.content.package import build_package
from guideline.core import toolchain
from guideline.core.config import load_config
from guideline.remote.cds import DEFAULT_USER, cds_base_for, discover, resolve_prefetch
from guideline.remote.http import Client, Timeouts, read_token
from guideline.remote.patients import days_until, load_patient, roll_dates
from guideline.remote.publish import publish_resources
from tools.bench import CDS_BEGIN, CDS_END, log, machine, percentile

SERVICE = "gl-treatment"
GUIDANCE_MS = 500  # CDS Hooks: services should answer in about 500 ms


@dataclass
class Load:
    """Latencies (s) and errors of one timed phase."""

    seconds: float = 0.0
    lat: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def row(self, name: str, clients: int) -> str:
        """A markdown table row: calls, throughput, p50/p95/p99 (ms), errors."""
        ms = [x * 1000 for x in self.lat]
        p = (_p(ms, 50), _p(ms, 95), _p(ms, 99))
        rate = len(ms) / self.seconds if self.seconds else 0.0
        return (
            f"| {name} | {clients} | {len(ms):,} | {rate:.1f} | {p[0]:.0f} | {p[1]:.0f} | {p[2]:.0f} "
            f"| {len(self.errors)} |"
        )


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


def run_load(send: Callable[[requests.Session, int], requests.Response], n: int, clients: int, seconds: float) -> Load:
    """`clients` threads calling `send` for `seconds` (bounded: each call has its own read timeout)."""
    result = Load()
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
    return result


def jit_compare(
    servers: dict[str, str], bodies: list[bytes], warm: int, calls: int
) -> tuple[dict[str, list[float]], int]:
    """One client alternating channel-(a) calls between the servers, after `warm` calls each: latencies (s), errors.

    A failed call (timeout, non-200) is counted, not timed, and the comparison goes on.
    """
    lat: dict[str, list[float]] = {k: [] for k in servers}
    errors = 0
    with requests.Session() as session:
        for i in range(warm + calls):
            for name, url in servers.items():
                t0 = time.monotonic()
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
                if not ok:
                    errors += int(i >= warm)
                elif i >= warm:
                    lat[name].append(time.monotonic() - t0)
    return lat, errors


# Long: the report is one linear list of lines
def report(
    loads: dict[str, Any],
    clients: int,
    jit: tuple[dict[str, list[float]], int] | None,
    warm: int,
    info: dict[str, str],
    cmd: str,
) -> str:
    """The BENCHMARKS.md block."""
    disc95 = _p([x * 1000 for x in loads["discovery"].lat], 95)
    lines = [
        CDS_BEGIN,
        "## 7. CDS Hooks under load, as EHRs call it (pathway service `gl-treatment`)",
        "",
        f"Command: `{cmd}`; {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}; {info['cores']} cores, "
        f"load average at start {info['load']} (the machine is shared: other jobs ran during the measurement; "
        "the clients run on the same 2 cores as the server and the test EHR). Server JVM: full tiered JIT "
        "(`GUIDELINE_SERVER_JIT=c2`, see the JIT table), `-Xmx2g -XX:+UseSerialGC`. "
        f"{clients} concurrent EHR clients (threads, one HTTP session each) call `gl-treatment` round-robin over "
        f"the {loads['n']} scenarios of `tests/cases` for the time shown, per channel: (a) prefetch only (the EHR "
        "resolved the templates once per patient), (b) `fhirServer` + `fhirAuthorization` only (the service reads "
        "the test EHR, a second HAPI JVM requiring its bearer token). Trivial call: discovery "
        "(`GET /cds-services`) under the same load. An error is any non-200 or an answer without `cards`.",
        "",
        "| phase | clients | calls | calls/s | p50 ms | p95 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ("a", "b", "discovery"):
        label = {"a": "(a) prefetch", "b": "(b) fhirServer", "discovery": "discovery (trivial)"}[name]
        lines.append(loads[name].row(f"{label}, {loads[name].seconds:.0f} s", clients))
    lines.append("")
    for name in ("a", "b"):
        p95 = _p([x * 1000 for x in loads[name].lat], 95)
        verdict = "within" if p95 <= GUIDANCE_MS else "**over**"
        lines.append(
            f"- channel ({name}): p95 {p95:.0f} ms, {verdict} CDS Hooks' ~{GUIDANCE_MS} ms guidance; "
            f"{p95 / disc95:.1f}× the trivial call's p95 ({disc95:.0f} ms); errors {len(loads[name].errors)}"
        )
    errs = sorted({e for name in ("a", "b", "discovery") for e in loads[name].errors})
    if errs:
        lines.append(f"- error kinds: {', '.join(errs)}")
    if jit is None:
        return "\n".join([*lines, "", "(JIT comparison still running)", CDS_END]) + "\n"
    (c1, c2), jit_errors = (jit[0]["c1"], jit[0]["c2"]), jit[1]
    lines += [
        "",
        "### Server JIT: C1 only vs full tiered (C2), steady state",
        "",
        "Two knowledge servers started alike except `-XX:TieredStopAtLevel=1` (C1 only, `GUIDELINE_SERVER_JIT=c1`, "
        f"the default) vs none (`c2`). One client, channel (a), alternating calls between them; the first {warm} "
        f"calls to each not counted (warm-up); {jit_errors} measured calls failed (timeout or non-200, not timed).",
        "",
        "| JIT | calls | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for name, lat in (("C1 only (`c1`)", c1), ("tiered C2 (`c2`)", c2)):
        ms = [x * 1000 for x in lat]
        lines.append(f"| {name} | {len(ms)} | {_p(ms, 50):.0f} | {_p(ms, 95):.0f} | {_p(ms, 99):.0f} |")
    r50 = _p(c2, 50) / _p(c1, 50)
    r95 = _p(c2, 95) / _p(c1, 95)
    lines += [
        "",
        f"C2 / C1: p50 {r50:.2f}×, p95 {r95:.2f}×. Choice: tests keep C1 (many short-lived JVMs, start-up dominates); "
        "`scripts/bench` uses C2 (steady state is what it measures); the demo may use either "
        "(`GUIDELINE_SERVER_JIT`).",
        CDS_END,
    ]
    return "\n".join(lines) + "\n"


def _p(values: list[float], p: float) -> float:
    """The percentile, NaN for no values (every call of a phase failed)."""
    return percentile(values, p) if values else float("nan")


def write_block(path: Path, block: str) -> None:
    """Replace the CDS block in BENCHMARKS.md (append it when absent); temp file + rename."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if CDS_BEGIN in text and CDS_END in text:
        head, rest = text.split(CDS_BEGIN, 1)
        text = head + block.rstrip("\n") + rest.split(CDS_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# Long: the bench's sequence, bounded phase by phase
def main(argv: list[str] | None = None) -> int:
    """Set up both servers and the EHR, run the load and JIT phases, write the block."""
    p = argparse.ArgumentParser(prog="scripts/bench --cds", description=__doc__)
    p.add_argument("--server", required=True, help="FHIR base of the knowledge server with full tiered JIT (c2)")
    p.add_argument("--server-c1", required=True, help="FHIR base of the same server with C1-only JIT")
    p.add_argument("--ehr", required=True, help="FHIR base of the test EHR")
    p.add_argument("--ehr-token-file", type=Path, required=True)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=120, help="per channel (default 120)")
    p.add_argument("--quick", action="store_true", help="20 s per channel, fewer JIT calls; writes .run/")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    seconds = 20.0 if args.quick else args.seconds
    warm, calls = (20, 30) if args.quick else (30, 40)
    root = toolchain.repo_root()
    out = args.out or (root / ".run" / "BENCHMARKS.quick.md" if args.quick else root / "BENCHMARKS.md")
    info = machine()
    token = read_token(args.ehr_token_file) or ""
    cases = scenarios()
    with Engine() as eng:
        resources = build_package(load_config(), eng).resources
    for url in (args.server, args.server_c1):
        log(f"cds: publishing the package to {url}")
        publish_and_wait(url, resources)
    log(f"cds: loading {len(cases)} scenario patients onto the test EHR")
    with Client(args.ehr, token=token) as ehr:
        for pid, bundle in cases:
            # a rerun against the same EHR (bench servers kept up) need not rewrite what is there
            if ehr.request("GET", f"Patient/{pid}", ok=(200, 404, 410)).status_code != 200:
                load_patient(ehr, bundle)
    bodies = request_bodies(args.server, args.ehr, token, [pid for pid, _ in cases])
    url = f"{cds_base_for(args.server)}/{SERVICE}"

    def post(channel: str) -> Callable[[requests.Session, int], requests.Response]:
        def send(s: requests.Session, i: int) -> requests.Response:
            hdr = {"Content-Type": "application/json"}
            return s.post(url, data=bodies[channel][i], headers=hdr, timeout=60)

        return send

    def get(s: requests.Session, i: int) -> requests.Response:
        return s.get(cds_base_for(args.server), timeout=60)

    n = len(cases)
    log("cds: warm-up, 20 s per channel")
    for ch in ("a", "b"):
        run_load(post(ch), n, args.clients, 20)
    loads: dict[str, Any] = {"n": n}
    for ch in ("a", "b"):
        log(f"cds: channel ({ch}), {args.clients} clients, {seconds:.0f} s")
        loads[ch] = run_load(post(ch), n, args.clients, seconds)
    log("cds: discovery under the same load, 30 s")
    loads["discovery"] = run_load(get, n, args.clients, min(30.0, seconds))
    log(f"cds: JIT, {warm} warm-up + {calls} calls to each server, alternating")
    # the servers' URLs and the token file are the bench's own (free ports, temp files): not part of the command
    cmd = "scripts/bench --cds" + (" --quick" if args.quick else "")
    write_block(out, report(loads, args.clients, None, warm, info, cmd))  # the load figures, kept if JIT fails
    jit = jit_compare({"c2": args.server, "c1": args.server_c1}, bodies["a"], warm, calls)
    write_block(out, report(loads, args.clients, jit, warm, info, cmd))
    log(f"wrote {out}")
    bad = sum(len(loads[k].errors) for k in ("a", "b", "discovery"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
