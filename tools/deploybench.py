"""`scripts/bench --deploy`: the server as deployed, side by side: one node on H2, one node on PostgreSQL, two
nodes on PostgreSQL behind HAProxy. CDS throughput and p95 with 8 concurrent clients (errors and stale answers
counted, CPU per call measured from the nodes' /proc), publish cold and no-op, and a bounded soak at a fixed rate
on the two-node set-up. Every server is started and stopped by scripts/server on 127.0.0.1; every call has a
timeout. Writes the section to a Markdown file.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guideline.content.cql import Engine
from guideline.content.package import build_package
from guideline.core.config import load_config
from guideline.remote.cds import call
from guideline.remote.http import Client, Timeouts
from guideline.remote.patients import days_until, load_patient, roll_dates
from guideline.remote.publish import publish_resources
from tools import benchkit

ROOT = Path(__file__).resolve().parents[1]
CASE = ROOT / "tests" / "cases" / "r3-triglycerides-at-threshold"
SERVICE = "GLR3Levocarnitine"
CLIENTS = 8
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Setup:
    """One deployment to measure: its label and scripts/server start options."""

    label: str
    args: tuple[str, ...]
    nodes: int


SETUPS = (
    Setup("1 node, H2", (), 1),
    Setup("1 node, PostgreSQL", ("--db", "postgres"), 1),
    Setup("2 nodes, PostgreSQL, HAProxy", ("--db", "postgres", "--nodes", "2"), 2),
)


def log(msg: str) -> None:
    """Progress on stderr."""
    benchkit.log(msg, "deploybench")


def p95(values: list[float]) -> float:
    """95th percentile (nearest rank) of a non-empty list."""
    s = sorted(values)
    return s[min(len(s) - 1, int(0.95 * len(s)))]


def free_port_run(n: int) -> int:
    """A port P such that P..P+n are all free now."""
    for _ in range(50):
        socks = []
        try:
            first = socket.socket()
            first.bind(("127.0.0.1", 0))
            socks.append(first)
            base = first.getsockname()[1]
            for q in range(base + 1, base + n + 1):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", q))
            return int(base)
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no run of {n + 1} free ports")


def _server(port: int, *args: str, token_file: Path) -> str:
    env = {**os.environ, "GUIDELINE_SERVER_PORT": str(port), "GUIDELINE_WRITE_TOKEN_FILE": str(token_file)}
    proc = subprocess.run(
        [str(ROOT / "scripts" / "server"), *args], env=env, capture_output=True, text=True, timeout=1200, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/server {' '.join(args)} failed: {proc.stderr[-2000:]}")
    return proc.stdout.strip()


def _pids(port: int, setup: Setup) -> list[int]:
    ports = [port] if setup.nodes == 1 else [port + i for i in range(1, setup.nodes + 1)]
    return [int((ROOT / ".run" / f"server-{p}.pid").read_text().split()[0]) for p in ports]


def _cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def _live_heap_mb(pids: list[int]) -> float | None:
    """The nodes' heap in use right after a forced full GC (MB): what a leak would make grow.

    None when it cannot be read (no jcmd/jstat, a node gone): the table shows a dash, never a made-up 0.
    """
    total = 0.0
    for pid in pids:
        try:
            subprocess.run(["jcmd", str(pid), "GC.run"], capture_output=True, timeout=60, check=True)  # noqa: S603, S607
            out = subprocess.run(  # noqa: S603
                ["jstat", "-gc", str(pid)],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,  # noqa: S607
            ).stdout.split()
        except (OSError, subprocess.SubprocessError):
            return None
        half = len(out) // 2
        cols = dict(zip(out[:half], out[half:], strict=True))
        total += sum(float(cols.get(k, "0")) for k in ("S0U", "S1U", "EU", "OU")) / 1024
    return total


def _rss_mb(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    return total


@contextmanager
def running(setup: Setup, port: int, token_file: Path) -> Iterator[str]:
    """A started deployment's URL; stopped afterwards."""
    log(f"starting {setup.label} on port {port}")
    try:
        # inside the try: an interrupted or failed start may have started PostgreSQL or a node already
        yield _server(port, "start", *setup.args, token_file=token_file)
    finally:
        _server(port, "stop", token_file=token_file)


def _publish_times(url: str, token: str, resources: list[dict[str, Any]]) -> tuple[float, float]:
    with Client(url, token=token) as c:
        t0 = time.perf_counter()
        publish_resources(c, resources)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        publish_resources(c, resources)
        return cold, time.perf_counter() - t0


def _patient(url: str, token: str) -> str:
    expected = json.loads((CASE / "expected.json").read_text(encoding="utf-8"))
    bundle = json.loads((CASE / "patient.json").read_text(encoding="utf-8"))
    with Client(url, token=token) as c:
        load_patient(c, roll_dates(bundle, days_until(expected["at"])))
    return str(next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"))


def _one_call(url: str, pid: str, want: list[str]) -> tuple[float, str]:
    """(seconds, "ok" | "stale" | "error") of one CDS call; stale = other card summaries than the first answer."""
    t0 = time.perf_counter()
    try:
        with Client(url, timeouts=Timeouts(read_s=60)) as c:
            cards = call(c, SERVICE, patient=pid)["cards"]
        outcome = "ok" if sorted(card["summary"] for card in cards) == want else "stale"
    except Exception:  # noqa: BLE001  # any failure counts as an error of the run
        outcome = "error"
    return time.perf_counter() - t0, outcome


def throughput(url: str, pid: str, pids: list[int], seconds: float) -> dict[str, Any]:
    """8 clients calling the CDS service back to back for `seconds`: calls/s, p95, errors, stale, CPU per call."""
    with Client(url) as c:
        want = sorted(card["summary"] for card in call(c, SERVICE, patient=pid)["cards"])
    for _ in range(CLIENTS):  # warm every node's caches
        _one_call(url, pid, want)
    results: list[tuple[float, str]] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < stop:
            r = _one_call(url, pid, want)
            with lock:
                results.append(r)

    cpu0, t0 = _cpu_s(pids), time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        for f in [pool.submit(client) for _ in range(CLIENTS)]:
            f.result()
    wall, cpu = time.perf_counter() - t0, _cpu_s(pids) - cpu0
    lat = [t for t, _ in results]
    return {
        "calls": len(results),
        "per_s": len(results) / wall,
        "p50": statistics.median(lat),
        "p95": p95(lat),
        "errors": sum(1 for _, o in results if o == "error"),
        "stale": sum(1 for _, o in results if o == "stale"),
        "cpu_ms": 1000 * cpu / max(1, len(results)),
        "cards": len(want),
    }


def soak(url: str, pid: str, pids: list[int], seconds: float, rate: float, bucket_s: float) -> list[dict[str, Any]]:
    """Calls at a fixed rate (4 clients) for `seconds`; per bucket: calls, errors, stale, p95, the nodes' RSS."""
    with Client(url) as c:
        want = sorted(card["summary"] for card in call(c, SERVICE, patient=pid)["cards"])
    results: list[tuple[float, float, str]] = []
    lock = threading.Lock()
    start = time.monotonic()
    interval = 4 / rate
    rss: list[tuple[float, float]] = []

    def client(offset: float) -> None:
        n = 0
        while True:
            due = start + offset + n * interval
            # bounded by the clock too: a server slower than the rate makes the schedule fall behind, not longer
            if due - start >= seconds or time.monotonic() - start >= seconds:
                return
            time.sleep(max(0.0, due - time.monotonic()))
            t, o = _one_call(url, pid, want)
            with lock:
                results.append((due - start, t, o))
            n += 1

    heap: list[tuple[float, float | None]] = []
    # mid-interval: the reading (two jcmd + jstat, ~2 s) must land inside the interval it is reported for
    next_heap = bucket_s * 0.5
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client, i * interval / 4) for i in range(4)]
        while any(not f.done() for f in futures):
            now = time.monotonic() - start
            rss.append((now, _rss_mb(pids)))
            if now >= next_heap:  # once per interval: the live heap after a forced full GC
                heap.append((now, _live_heap_mb(pids)))
                next_heap += bucket_s
            time.sleep(bucket_s / 6)
    rows = []
    for b in range(int(seconds // bucket_s)):
        lo, hi = b * bucket_s, (b + 1) * bucket_s
        part = [(t, o) for at, t, o in results if lo <= at < hi]
        mem = [m for at, m in rss if lo <= at < hi] or [0.0]
        live = [m for at, m in heap if lo <= at < hi]
        rows.append(
            {
                "t": hi,
                "calls": len(part),
                "errors": sum(1 for _, o in part if o == "error"),
                "stale": sum(1 for _, o in part if o == "stale"),
                "p95": p95([t for t, _ in part]) if part else 0.0,
                "rss": max(mem),
                "heap": live[-1] if live else None,
            }
        )
    return rows


# Long: the report is one table per measurement, written in order
def report(rows: dict[str, dict[str, Any]], soak_rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The Markdown section."""
    out = [
        "## 8. Deployment: one node H2, one node PostgreSQL, two nodes PostgreSQL behind HAProxy",
        "",
        f"`scripts/bench --deploy` (tools/deploybench.py), {time.strftime('%Y-%m-%d', time.gmtime())}, "
        f"{os.cpu_count()} cores, shared with other work. CDS `patient-view` on `{SERVICE}` for the boundary "
        f"patient (`{CASE.name}`, data on the server), {CLIENTS} concurrent clients for {args.seconds:.0f} s after "
        "a warm-up; stale = an answer whose cards differ from the first answer's. CPU per call = the node JVMs' "
        "user+system CPU during the run / calls (the proxy and PostgreSQL not included).",
        "",
        "| set-up | calls/s | p50 | p95 | errors | stale | JVM CPU per call | publish cold | publish no-op |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in rows.items():
        out.append(
            f"| {label} | {r['per_s']:.1f} | {r['p50'] * 1000:.0f} ms | {r['p95'] * 1000:.0f} ms | {r['errors']} | "
            f"{r['stale']} | {r['cpu_ms']:.0f} ms | {r['cold']:.2f} s | {r['noop']:.2f} s |"
        )
    one, two = rows.get(SETUPS[1].label), rows.get(SETUPS[2].label)
    if one and two:
        out += [
            "",
            f"Two nodes / one node (both PostgreSQL): {two['per_s'] / one['per_s']:.2f}x the throughput. On 2 cores "
            "two JVMs compete for the same CPUs, so this shows correctness under concurrency (errors, stale) rather "
            "than scale-out; per node, production needs about the JVM CPU per call above times the calls per second "
            "it should carry.",
        ]
    if soak_rows:
        calls = sum(r["calls"] for r in soak_rows)
        out += [
            "",
            f"Soak: {args.soak:.0f} s at {args.rate:g} calls/s (4 clients, fixed schedule) on two nodes behind the "
            f"proxy: {calls} calls, {sum(r['errors'] for r in soak_rows)} errors, "
            f"{sum(r['stale'] for r in soak_rows)} stale. Per {args.bucket:.0f} s: p95 latency, the two nodes' "
            "resident memory (max in the interval) and their live heap: the heap in use right after a full GC "
            "forced mid-interval (`jcmd PID GC.run`, then `jstat -gc`; that pause is in the p95). RSS "
            "grows while the JVMs enlarge their heaps up to `-Xmx`; a leak shows as a growing live heap.",
            "",
            "| until | calls | errors | stale | p95 | RSS both nodes | live heap both nodes |",
            "|---|---|---|---|---|---|---|",
        ]
        out += [
            f"| {r['t']:.0f} s | {r['calls']} | {r['errors']} | {r['stale']} | {r['p95'] * 1000:.0f} ms | "
            f"{r['rss']:.0f} MB | {_mb(r['heap'])} |"
            for r in soak_rows
        ]
    return "\n".join(out) + "\n"


def _mb(value: float | None) -> str:
    """A memory figure for the table; a dash when the interval got no reading."""
    return "–" if value is None else f"{value:.0f} MB"


HEADING = "## 8. Deployment"


def splice_section(document: str, section: str) -> str:
    """`document` with its deployment section (HEADING up to the next "## " heading) replaced by `section`
    (appended when it has none; removed when `section` is empty)."""
    start = document.find(HEADING)
    if start < 0:
        return document.rstrip("\n") + ("\n\n" + section if section else "\n")
    end = _section_end(document, start)
    rest = document[end + 1 :] if end >= 0 else ""
    return document[:start] + section + ("\n" + rest if rest else "")


def _section_end(document: str, start: int) -> int:
    """Where the section at `start` ends: the next "## " heading or marked block (e.g. the CDS load block), or -1."""
    ends = [i for i in (document.find(m, start + len(HEADING)) for m in ("\n## ", "\n<!-- ")) if i >= 0]
    return min(ends) if ends else -1


def deploy_section(document: str) -> str:
    """The deployment section of `document` ("" if none), so scripts/bench's full run keeps it."""
    start = document.find(HEADING)
    if start < 0:
        return ""
    end = _section_end(document, start)
    return document[start : end + 1] if end >= 0 else document[start:]


def main(argv: list[str] | None = None) -> int:
    """Measure every set-up in turn (one running at a time) and write the section."""
    p = argparse.ArgumentParser(prog="scripts/bench --deploy")
    p.add_argument("--port", type=int, default=0, help="server / proxy port, nodes on PORT+1, PORT+2 (default: free)")
    p.add_argument("--seconds", type=float, default=60, help="throughput run per set-up (default 60)")
    p.add_argument("--soak", type=float, default=600, help="soak length in seconds on two nodes (0: none)")
    p.add_argument("--rate", type=float, default=4, help="soak calls per second (default 4)")
    p.add_argument("--bucket", type=float, default=60, help="soak report interval in seconds (default 60)")
    p.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md", help="its section is replaced (or added)")
    args = p.parse_args(argv)
    args.port = args.port or free_port_run(2)
    token = secrets.token_urlsafe(24)
    token_file = ROOT / ".run" / f"bench-token-{args.port}"
    token_file.parent.mkdir(exist_ok=True)
    token_file.write_text(token + "\n", encoding="utf-8")
    token_file.chmod(0o600)
    with Engine() as engine:
        resources = build_package(load_config(), engine).resources
    rows: dict[str, dict[str, Any]] = {}
    soak_rows: list[dict[str, Any]] = []
    for setup in SETUPS:
        with running(setup, args.port, token_file) as url:
            cold, noop = _publish_times(url, token, resources)
            pid = _patient(url, token)
            pids = _pids(args.port, setup)
            log(f"{setup.label}: throughput for {args.seconds:.0f} s")
            rows[setup.label] = {**throughput(url, pid, pids, args.seconds), "cold": cold, "noop": noop}
            log(f"{setup.label}: {json.dumps(rows[setup.label])}")
            if setup.nodes == 2 and args.soak > 0:
                log(f"soak for {args.soak:.0f} s at {args.rate:g}/s")
                soak_rows = soak(url, pid, pids, args.soak, args.rate, args.bucket)
    token_file.unlink()
    old = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
    text = splice_section(old, report(rows, soak_rows, args))
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(args.out)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
