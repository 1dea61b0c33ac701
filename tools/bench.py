"""`scripts/bench`: population mode, HAPI $apply and CDS Hooks, build/validate and publish, side by side."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guideline.content.cql import Engine
from guideline.content.outputs import build
from guideline.content.package import Package, build_package
from guideline.core import toolchain
from guideline.core.config import Config, load_config
from guideline.evaluation.jvm import JavaEngine, JavaPool
from guideline.evaluation.population import (
    BATCH_RECORDS,
    FIRST_BATCH_RECORDS,
    EnginePool,
    PatientResult,
    evaluate_opened,
    evaluate_population,
    result_line,
)
from guideline.evaluation.records import open_population
from guideline.remote.apply import apply_patient, recommendation_plans
from guideline.remote.capability import check_server
from guideline.remote.cds import call, discover
from guideline.remote.http import Client, Timeouts
from guideline.remote.patients import days_until, load_patient, roll_dates
from guideline.remote.publish import plan_publish, publish_resources
from guideline.validation.run import validate
from tools import bench_measures, bench_spark, bench_synthea, deploybench
from tools.benchkit import Block, log, machine, percentile
from tools.deploybench import deploy_section, splice_section
from tools.synth import DEFAULT_AT, as_bundle, synth_patients, write_population

SEED = 20261124
AT = f"{DEFAULT_AT.isoformat()}T12:00:00Z"
# `scripts/bench --cds` (tools/bench_cds.py) owns this block of BENCHMARKS.md; a full run keeps it as it was.
CDS_BEGIN = "<!-- cds-load:begin (scripts/bench --cds) -->"
CDS_END = "<!-- cds-load:end -->"
CDS_BLOCK = Block(CDS_BEGIN, CDS_END)
BASELINE_ID = "BenchTrivialBaseline"
PATHWAY_CDS = "gl-treatment"  # the pathway service: every recommendation's cards in one call
OURS_CDS = "GLR2Bromocriptine"  # the recommendation with the most logic (two effects, a dynamic card text)
BASELINE_PLAN: dict[str, Any] = {
    "resourceType": "PlanDefinition",
    "id": BASELINE_ID,
    "url": f"http://example.org/fhir/bench/PlanDefinition/{BASELINE_ID}",
    "version": "1.0.0",
    "name": BASELINE_ID,
    "title": "Benchmark baseline: one unconditional action",
    "status": "active",
    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/plan-definition-type", "code": "eca-rule"}]},
    "action": [
        {
            "title": "Baseline card",
            "description": "Shown for every patient; no library, no condition.",
            "trigger": [{"type": "named-event", "name": "patient-view"}],
            "priority": "routine",
            # A CDS card needs a source; clinical reasoning takes it from the first documentation.
            "documentation": [{"type": "documentation", "display": "Benchmark baseline", "url": "http://example.org/"}],
        }
    ],
}


# From this size on, synthetic populations are written by two processes (a million patients: ~31 GB).
PARALLEL_SYNTH = 200_000
# The engines table's path names.
PARSE_ONLY = "parse only: the JVM reads, groups and HAPI-parses every resource"
JAVA_CLI = "Java batch, the JVM reads the NDJSON (the CLI)"
JAVA_FED = "Java batch, Python reads and sends batches (folders, Bulk, Spark)"
NODE = "Node workers (reference engine, Python walk)"

# The Spark section's export (a Spark run starts a JVM per Python worker, so it is kept small on 2 cores).
SPARK_PATIENTS = 1000
SPARK_PATIENTS_QUICK = 200
SPARK_RUNS = 3


@dataclass(frozen=True)
class Settings:
    """How much to measure: the full bench, or --quick for development."""

    runs: int
    sizes: tuple[int, ...]
    obs_levels: tuple[int, ...]
    obs_patients: int
    before_after_patients: int
    apply_sample: int
    cds_calls: int
    cli_sizes: tuple[int, ...]
    engine_patients: int = 10000
    engine_large: int | None = 100_000  # the engines part again at this size: Java and parse-only (None: skip)
    scale: int | None = None  # --scale N: the CLI once more at N patients (time, peak RSS), e.g. 1,000,000

    @classmethod
    def of(cls, quick: bool) -> Settings:
        if quick:
            return cls(3, (100, 1000), (10, 100, 1000), 10, 40, 4, 40, (1000,), 1000, None)
        return cls(5, (100, 1000, 10000), (10, 100, 1000), 40, 200, 20, 300, (1000, 10000))


@dataclass
class Series:
    """Repeated measurements of one thing."""

    values: list[float] = field(default_factory=list)

    def add(self, v: float) -> None:
        self.values.append(v)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def fmt(self, unit: str = "s", scale: float = 1.0, digits: int = 2) -> str:
        v = [x * scale for x in self.values]
        return f"{statistics.median(v):,.{digits}f} {unit} ({min(v):,.{digits}f}–{max(v):,.{digits}f}, n={len(v)})"


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def drain(results: Iterator[PatientResult]) -> int:
    """Consume a population run as the CLI does (one output line each); returns the patients evaluated."""
    n = 0
    for r in results:
        if r.evaluated:
            result_line(r)
            n += 1
    return n


# ---------------------------------------------------------------- the bench


class Bench:
    def __init__(self, settings: Settings, work: Path, server: str | None) -> None:
        self.s = settings
        self.work = work
        self.server = server
        self.cfg: Config = load_config()
        self.sections: list[tuple[str, list[str]]] = []
        self.targets: list[tuple[str, str, str, bool | None]] = []
        self.notes: dict[str, Any] = {}
        self.failures: list[str] = []

    def section(self, title: str, lines: list[str]) -> None:
        self.sections.append((title, lines))

    def target(self, what: str, goal: str, measured: str, met: bool | None) -> None:
        self.targets.append((what, goal, measured, met))

    def population_file(self, n: int, observations: tuple[int, int] | None = None, name: str = "") -> Path:
        """The first n patients of the bench's population as grouped NDJSON in the work folder (made once)."""
        path = self.work / f"{name or 'pop'}-{n}.ndjson"
        if not path.exists():
            log(f"synth: {n} patients -> {path.name}")
            if n >= PARALLEL_SYNTH and observations is None:
                _synth_parallel(path, n)
            else:
                patients = (
                    synth_patients(SEED, n, observations=observations) if observations else synth_patients(SEED, n)
                )
                write_population(path, patients, "ndjson")
        return path

    # 1 + 5: local throughput, growth with observations, before/after, the CLI at 10,000, memory
    def local(self) -> None:
        s = self.s
        files = {n: self.population_file(n) for n in s.sizes}
        resources = _mean_resources(files[max(s.sizes)])
        # The default engine (the JVM batch evaluator, reading the NDJSON itself) with 1 and 2 threads;
        # the Node worker (the reference engine) stays in 1b and the before/after table, and in 1d.
        with JavaPool(self.cfg, 1) as j1, JavaPool(self.cfg, 2) as j2, EnginePool(1) as pool1:
            pkg = build_package(self.cfg, pool1.engines[0])
            pools: dict[int, JavaPool] = {1: j1, 2: j2}
            warm = self.population_file(1000)
            for jp in pools.values():
                drain(evaluate_opened(pkg, open_population(warm), AT, jp))
            rates: dict[tuple[int, int], Series] = {(n, w): Series() for n in s.sizes for w in pools}
            for n in s.sizes:
                for run in range(s.runs):
                    for w, pool in pools.items():  # side by side: 1 and 2 workers alternate
                        log(f"throughput: {n} patients, {w} thread(s), run {run + 1}/{s.runs}")
                        got = 0

                        def go(path: Path = files[n], pool: JavaPool = pool) -> None:
                            nonlocal got
                            got = drain(evaluate_opened(pkg, open_population(path), AT, pool))

                        t = timed(go)
                        assert got == n, f"{got} of {n} evaluated"  # noqa: S101 - a broken bench must not report
                        rates[(n, w)].add(n / t)
            rows = [
                "| patients | JVM threads | patients/s: median (min–max, runs) | 2 threads / 1 thread |",
                "|---|---|---|---|",
            ]
            for n in s.sizes:
                for w in pools:
                    speedup = rates[(n, 2)].median / rates[(n, 1)].median
                    rows.append(
                        f"| {n:,} | {w} | {rates[(n, w)].fmt('', digits=0)} | {f'{speedup:.2f}×' if w == 2 else ''} |"
                    )
            self.notes["local_rate_2w"] = rates[(max(s.sizes), 2)].median
            self.section(
                "1. Local throughput (population mode)",
                [
                    f"Synthetic population (`scripts/synth --seed {SEED}`), {resources:.0f} resources per patient on "
                    f"average, evaluated at {AT}; the same first N patients at each size. The default engine: the "
                    "JVM batch evaluator (`--engine java`) reads and groups the NDJSON, evaluates and walks the "
                    "pathway, one output line per patient (as `recommend --population`); 1 and 2 JVM threads "
                    "alternate. Not timed: JVM start and package load (see the CLI runs below).",
                    "",
                    *rows,
                ],
            )
            target_n = max(s.sizes)
            r2 = rates[(target_n, 2)].median
            self.target(
                f"population mode (Java engine), 2 threads, {target_n:,} patients of ~{resources:.0f} resources",
                "≥ 2,000 patients/s (floor 1,000)",
                f"{r2:,.0f} patients/s",
                r2 >= 2000 if target_n >= 10000 else None,
            )
            self.observation_growth(pkg, pool1)
            self.before_after(pkg, pool1)
        self.cli_runs()
        self.step("bulk input", self.bulk_grouping)

    # 1 + 5 (issue 14): the JVM batch evaluator vs the Node workers vs the parse-only ceiling
    # Long: side-by-side measurements at two sizes, one table and its explanation
    def engines(self) -> None:
        """Java batch (the JVM reads the file; or fed by Python) vs Node workers vs parsing only, same patients."""
        n = self.s.engine_patients
        large = self.s.engine_large
        path = self.population_file(n)
        big = self.population_file(large) if large else None
        resources = _mean_resources(path)
        with JavaPool(self.cfg, 2) as jpool, EnginePool(2) as npool:
            pkg = build_package(self.cfg, npool.engines[0])
            jpool.load(pkg)
            java = jpool.walker
            assert java is not None  # noqa: S101 - the package's walk compiles
            log("engines: warming up the JVM (1,000 patients) and the workers (64)")
            drain(evaluate_opened(pkg, open_population(self.population_file(1000)), AT, jpool))
            drain(evaluate_population(pkg, open_population(self.population_file(64)).records(), AT, npool))
            paths: list[tuple[int, str, Callable[[], int]]] = [
                (n, PARSE_ONLY, lambda: _parsed(java, path, n)),
                (n, JAVA_CLI, lambda: _run(pkg, path, jpool, True)),
                (n, JAVA_FED, lambda: _run(pkg, path, jpool)),
                (n, NODE, lambda: _run(pkg, path, npool)),
            ]
            if big is not None and large:
                # The Node workers at 100,000 would take ~15 min and are not the default engine.
                paths += [
                    (large, PARSE_ONLY, lambda: _parsed(java, big, large)),
                    (large, JAVA_CLI, lambda: _run(pkg, big, jpool, True)),
                ]
            got = {(size, name): _measure(java, name, go, size) for size, name, go in paths}
        rows = [
            "| patients | path | patients/s (wall) | JVM CPU s | Python CPU s | patients per CPU-second | "
            "of parse-only | JVM peak RSS MiB (so far) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for (size, name), m in got.items():
            jvm = name != NODE
            cpu = m["jcpu"] + m["pcpu"] if jvm else m["pcpu"]
            parse = got[(size, PARSE_ONLY)]
            rows.append(
                f"| {size:,} | {name} | {size / m['wall']:,.0f} | {m['jcpu']:.1f} | {m['pcpu']:.1f} | "
                f"{size / cpu:,.0f}{'' if jvm else ' (Python only)'} | {parse['wall'] / m['wall']:.0%} | "
                f"{m['rss']:.0f} |"
            )
        node_rate = n / got[(n, NODE)]["wall"]
        for size in sorted({size for size, _ in got}):
            rate = size / got[(size, JAVA_CLI)]["wall"]
            share = got[(size, PARSE_ONLY)]["wall"] / got[(size, JAVA_CLI)]["wall"]
            extra = f" ({rate / node_rate:.1f}× the Node workers)" if size == n else ""
            self.target(
                f"Java batch (the CLI path), 2 threads, {size:,} patients of ~{resources:.0f} resources",
                "≥ 2,000 patients/s (floor 1,000)",
                f"{rate:,.0f} patients/s{extra}",
                rate >= 2000,
            )
            self.target(
                f"Java batch vs the parse-only ceiling, {size:,} patients", "≥ 50 %", f"{share:.0%}", share >= 0.5
            )
        self.section(
            "1d. Java batch vs Node workers vs the parse-only ceiling",
            [
                f"{n:,} synthetic patients (`scripts/synth --seed {SEED}`, ~{resources:.0f} resources each)"
                + (f", then the first {large:,} of the same population" if large else "")
                + ", 2 JVM threads / 2 Node workers, measured one after the other in the same process after a "
                "warm-up. 'of parse-only' = parse-only wall time / this path's wall time at the same size (the "
                "physical limit: reading and parsing the same JSON with the same library, HAPI's parser, no "
                "evaluation). CPU seconds are given because the machine is shared: patients per CPU-second does "
                "not depend on how much of the 2 cores the other users left. Node rows: the JVM columns are the "
                "idle JVM's. JVM peak RSS is the JVM's high-water mark since it started (all rows above it "
                "included), so a row equal to the one before means memory did not grow.",
                "",
                *rows,
            ],
        )

    def bulk_grouping(self) -> None:
        """Reading a Bulk export (index, then patient by patient) vs the grouped NDJSON: the grouping cost."""
        n = max(self.s.sizes)
        grouped = self.population_file(n)
        bulk = self.work / f"bulk-{n}"
        if not bulk.exists():
            log(f"synth: {n} patients -> {bulk.name} (bulk)")
            write_population(bulk, synth_patients(SEED, n), "bulk")
        runs: dict[str, list[dict[str, float]]] = {"grouped NDJSON": [], "Bulk export": []}
        for run in range(self.s.runs):
            for kind, path in (("grouped NDJSON", grouped), ("Bulk export", bulk)):  # side by side, alternating
                log(f"bulk input: read {kind}, {n} patients, run {run + 1}/{self.s.runs}")
                runs[kind].append(_read_only(path, n))
        # End to end with the default engine, as `recommend --population` runs each input: the JVM reads the
        # grouped NDJSON itself; the export is indexed and read by Python, which sends batches to the JVM.
        evaluated: dict[str, Series] = {kind: Series() for kind in runs}
        with JavaPool(self.cfg, 2) as jpool, Engine() as eng:
            pkg = build_package(self.cfg, eng)
            drain(evaluate_opened(pkg, open_population(self.population_file(1000)), AT, jpool))  # warm-up
            for run in range(self.s.runs):
                for kind, path in (("grouped NDJSON", grouped), ("Bulk export", bulk)):
                    log(f"bulk input: evaluate {kind}, {n} patients, run {run + 1}/{self.s.runs}")

                    def go(path: Path = path) -> None:
                        with open_population(path) as population:
                            got = drain(evaluate_opened(pkg, population, AT, jpool))
                        assert got == n, f"{got} of {n} evaluated"  # noqa: S101 - a broken bench must not report

                    evaluated[kind].add(n / timed(go))
        rows = [
            "| input | grouping (index) s | reading s | patients/s read | peak RSS MiB (reading) | "
            "patients/s evaluated (Java, 2 threads) |",
            "|---|---|---|---|---|---|",
        ]
        rate: dict[str, float] = {}
        for kind, got in runs.items():
            total = Series([r["open"] + r["read"] for r in got])
            rate[kind] = n / total.median
            rows.append(
                f"| {kind} | {statistics.median(r['open'] for r in got):.1f} | "
                f"{statistics.median(r['read'] for r in got):.1f} | {rate[kind]:,.0f} | "
                f"{max(r['rss'] for r in got):.0f} | {evaluated[kind].fmt('', digits=0)} |"
            )
        e2e = evaluated["Bulk export"].median / evaluated["grouped NDJSON"].median
        self.section(
            "1c. Bulk Data export input vs grouped NDJSON (reading, and end to end)",
            [
                f"The same {n:,} patients as `scripts/synth --format bulk` (one NDJSON file per resource type and the "
                "manifest) and as grouped NDJSON, only read and grouped into Bundles as `recommend --population` "
                "does (no evaluation), each in its own process so its peak RSS is its own. Grouping the export "
                "indexes every line by patient in SQLite on disk, then reads each patient back by file offset. "
                f"Bulk / grouped reading rate: {rate['Bulk export'] / rate['grouped NDJSON']:.2f}×. End to end "
                "with the Java engine (the last column, runs alternating): the JVM reads grouped NDJSON itself, "
                "while an export is indexed and read by Python, which sends the Bundles to the JVM in batches; "
                f"Bulk / grouped: {e2e:.2f}×, the grouping cost as a user sees it.",
                "",
                *rows,
            ],
        )

    def observation_growth(self, pkg: Package, pool: EnginePool) -> None:
        s = self.s
        files = {k: self.population_file(s.obs_patients, (k, k), name=f"obs{k}") for k in s.obs_levels}
        per: dict[int, Series] = {k: Series() for k in s.obs_levels}
        for run in range(s.runs):
            for k in s.obs_levels:
                log(f"growth: {k} observations per patient, run {run + 1}/{s.runs}")

                def go(f: Path = files[k]) -> None:
                    drain(evaluate_population(pkg, open_population(f).records(), AT, pool))

                per[k].add(timed(go) / s.obs_patients)
        rows = [
            "| Observations per patient | ms per patient: median (min–max, runs) | growth vs previous |",
            "|---|---|---|",
        ]
        prev: float | None = None
        for k in s.obs_levels:
            growth = f"{per[k].median / prev:.1f}× for {k // (k // 10 if k >= 100 else 1)}× data" if prev else ""
            rows.append(f"| {k:,} | {per[k].fmt('ms', 1000, 1)} | {growth} |")
            prev = per[k].median
        lo, hi = s.obs_levels[-2], s.obs_levels[-1]
        marginal = (per[hi].median - per[lo].median) / (hi - lo) * 1000
        self.section(
            "1b. Cost per patient as the record grows",
            [
                f"{s.obs_patients} synthetic patients (same seed, so the same phenotypes) with exactly 10, 100 and "
                "1,000 Observations each, 1 worker. Near-linear: from 100 to 1,000 Observations the cost grows "
                f"by {marginal:.3f} ms per Observation.",
                "",
                *rows,
            ],
        )

    def before_after(self, pkg: Package, pool: EnginePool) -> None:
        s = self.s
        n = s.before_after_patients
        path = self.population_file(n)
        plain, fast = Series(), Series()
        for run in range(s.runs):
            log(f"before/after: {n} patients, run {run + 1}/{s.runs}")
            for series, flag in ((plain, True), (fast, False)):

                def go(flag: bool = flag) -> None:
                    drain(evaluate_population(pkg, open_population(path).records(), AT, pool, plain=flag))

                series.add(n / timed(go))
        self.notes["before_after"] = (plain, fast)
        self.section(
            "Worker optimisation, before and after (measured side by side)",
            [
                f"{n} patients of the same population, 1 worker, batched protocol in both; 'before' is the worker's "
                "plain evaluation (`plain: true`: cql-execution as `execute` uses it), 'after' the population "
                "speed-ups (see 'Profiling' below).",
                "",
                "| worker evaluation | patients/s: median (min–max, runs) |",
                "|---|---|",
                f"| before (plain) | {plain.fmt('', digits=1)} |",
                f"| after | {fast.fmt('', digits=1)} |",
                f"| speed-up | {fast.median / plain.median:.1f}× |",
            ],
        )

    # Long: one loop over the sizes, each a user's run of the CLI, its figures parsed from the summary
    def cli_runs(self) -> None:
        """`guideline recommend --population` end to end at each size (and --scale N once): time and peak RSS."""
        first_mem = ("?", "0")
        rows = [
            "| patients | wall time (one run) | patients/s evaluating | start-up | peak RSS: CLI | "
            "peak RSS: engine (the JVM) |",
            "|---|---|---|---|---|---|",
        ]
        sizes = self.s.cli_sizes + ((self.s.scale,) if self.s.scale else ())
        for n in sizes:
            path = self.population_file(n)
            out = self.work / f"results-{n}.ndjson"
            cmd = [
                str(toolchain.repo_root() / ".venv" / "bin" / "guideline"),
                "recommend",
                "--population",
                str(path),
                "--at",
                AT,
                "--workers",
                "2",
                "--out",
                str(out),
            ]
            log(f"CLI: {' '.join(cmd[1:])}")
            t = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(1800, n // 100))
            wall = time.perf_counter() - t
            if proc.returncode != 0:
                raise RuntimeError(f"population CLI failed ({proc.returncode}): {proc.stderr[-2000:]}")
            rate = re.search(r"\(([\d,]+) patients/s", proc.stderr)
            start = re.search(r"after ([\d.]+) s start-up", proc.stderr)
            mem = re.search(r"peak RSS (\d+) MiB \(this process\), ([\d/]+) MiB \(workers\)", proc.stderr)
            lines = sum(1 for _ in out.open(encoding="utf-8"))
            if lines != n:
                raise RuntimeError(f"population CLI wrote {lines} results for {n} patients")
            rows.append(
                f"| {n:,} | {wall:.1f} s | {rate.group(1) if rate else '?'} | {start.group(1) if start else '?'} s "
                f"| {mem.group(1) if mem else '?'} MiB | {mem.group(2) if mem else '?'} MiB |"
            )
            if n == self.s.scale:
                out.unlink()  # a million results are ~1.3 GB
                if mem:
                    self.target(
                        f"peak memory, {self.s.cli_sizes[0]:,} → {n:,} patients (the CLI, Java engine)",
                        "flat",
                        f"CLI {first_mem[0]} → {mem.group(1)} MiB, JVM {first_mem[1]} → {mem.group(2)} MiB",
                        int(mem.group(1)) <= int(first_mem[0]) * 1.2
                        and max(map(int, mem.group(2).split("/"))) <= max(map(int, first_mem[1].split("/"))) * 1.2,
                    )
            elif mem and n == self.s.cli_sizes[0]:
                first_mem = (mem.group(1), mem.group(2))
        self.section(
            "5. The CLI end to end, and peak memory",
            [
                "`guideline recommend --population pop-N.ndjson --at "
                f"{AT} --workers 2 --out results.ndjson` as a user runs it, with the default engine (the JVM "
                "batch evaluator, 2 threads; start-up = the package compiled, the JVM started and loaded). Peak "
                "RSS from the CLI's own summary line (getrusage for the CLI, the JVM's own high-water mark from "
                "/proc for the engine). Memory does not grow with the population: the JVM streams the file and "
                "holds a bounded queue of patients per thread; the CLI writes each line as it comes."
                + (
                    f" The {self.s.scale:,}-patient row is one run (`scripts/bench --scale {self.s.scale}`; its "
                    "input was written by two synth processes in parallel, and its results file deleted after)."
                    if self.s.scale
                    else ""
                ),
                "",
                *rows,
            ],
        )

    # 4: build + validate vs the server's $validate; publish cold vs no-op
    def build_validate(self, client: Client | None) -> None:
        s = self.s
        out = self.work / "dist"
        guideline = str(toolchain.repo_root() / ".venv" / "bin" / "guideline")
        cold, warm, server = Series(), Series(), Series()
        first_server: float | None = None
        with Engine() as eng:
            build(out, self.cfg, eng)  # warm-up: the engine's first compile
            validate(out, self.cfg, eng)
            bundle = json.loads((out / "bundle.json").read_text(encoding="utf-8"))
            for run in range(s.runs):
                log(f"build + validate: run {run + 1}/{s.runs}")

                def cold_run() -> None:
                    for cmd in (["build", "--out", str(out)], ["validate", str(out)]):
                        proc = subprocess.run([guideline, *cmd], capture_output=True, text=True, timeout=600)
                        if proc.returncode != 0:
                            raise RuntimeError(f"guideline {' '.join(cmd)} failed: {proc.stdout[-1500:]}")

                cold.add(timed(cold_run))

                def warm_run() -> None:
                    build(out, self.cfg, eng)
                    report = validate(out, self.cfg, eng)
                    if not report.ok:
                        raise RuntimeError(report.render_text())

                warm.add(timed(warm_run))
                if client is not None:

                    def server_run() -> None:
                        client.request("POST", "Bundle/$validate", json_body=bundle, ok=(200, 400, 412, 422))

                    if first_server is None:
                        first_server = timed(server_run)
                    server.add(timed(server_run))
        rows = [
            "| what | time: median (min–max, runs) |",
            "|---|---|",
            f"| `guideline build && guideline validate dist/`, cold (two fresh processes) | {cold.fmt()} |",
            f"| the same in one process with a warm CQL worker | {warm.fmt()} |",
        ]
        lines = [
            f"The package ({len(bundle.get('entry', []))} resources in `dist/bundle.json`). Cold includes Python "
            "start-up, the Node worker start and the translator's first compile (FHIRHelpers).",
            "",
        ]
        if client is not None and server.values:
            rows.append(f"| server `POST Bundle/$validate` of the same bundle | {server.fmt()} |")
            rows.append(f"| (its first call, not in the median) | {first_server or 0:.2f} s |")
            lines.append(
                "The server's `$validate` checks the bundle against the R4 core profiles only (no CPG/CRMI "
                "package, no CQL): much less than our eight layers, which include compiling the CQL."
            )
            lines.append("")
            rows.append(f"| ratio cold / server | {cold.median / server.median:.1f}× |")
            rows.append(f"| ratio warm / server | {warm.median / server.median:.1f}× |")
        self.section("4. Build + validate vs the server's $validate", lines + rows)

    def publish(self, client: Client, pkg: Package) -> None:
        s = self.s
        cold, noop, metadata, lookup = Series(), Series(), Series(), Series()
        for run in range(s.runs):
            log(f"publish: run {run + 1}/{s.runs}")
            for r in pkg.resources:  # back to "not on the server" for the cold publish
                client.request("DELETE", f"{r['resourceType']}/{r['id']}", ok=(200, 202, 204, 404, 410))
            t = time.perf_counter()
            first = publish_resources(client, pkg.resources)
            cold.add(time.perf_counter() - t)
            if first.writes != len(pkg.resources):
                raise RuntimeError(f"cold publish wrote {first.writes} of {len(pkg.resources)} resources")
            t = time.perf_counter()
            again = publish_resources(client, pkg.resources)
            noop.add(time.perf_counter() - t)
            if again.writes != 0:
                raise RuntimeError(f"re-publish wrote {again.writes} resources; expected none")
            # Where a no-op's time goes: its two requests, timed on their own.
            metadata.add(timed(lambda: check_server(client)))
            lookup.add(timed(lambda: plan_publish(client, pkg.resources, False)))
        ratio = noop.median / cold.median
        library_bytes = sum(len(json.dumps(r)) for r in pkg.resources if r["resourceType"] == "Library")
        self.section(
            "4b. Publish: cold vs no-op re-publish",
            [
                f"All {len(pkg.resources)} package resources. Cold: each resource deleted first, so publish "
                "compares and writes everything in one transaction. No-op: the same package again (compares, "
                "writes nothing).",
                "",
                "| publish | time: median (min–max, runs) |",
                "|---|---|",
                f"| cold | {cold.fmt()} |",
                f"| no-op re-publish | {noop.fmt()} |",
                f"| ratio no-op / cold | {ratio:.2f} |",
                f"| a no-op's first request alone: `GET /metadata?_elements=…` (FHIR version, transactions) | "
                f"{metadata.fmt()} |",
                f"| its second alone: one batch reading the content at each `url|version` | {lookup.fmt()} |",
                "",
                "A no-op is exactly those two reads; a cold publish adds a batch looking up the ids that have no "
                "same-version match, and one transaction of writes. The no-op has to read back the content it "
                "compares, and the package's Libraries are "
                f"{library_bytes / 1e6:.1f} MB of it (FHIRHelpers' ELM alone is 0.9 MB): reading them is most of "
                "the lookup.",
            ],
        )
        self.target("no-op re-publish vs cold publish", "≤ 0.1×", f"{ratio:.2f}×", ratio <= 0.1)

    # 2: HAPI $apply on a sample of the same patients, local on the same sample
    def hapi_apply(self, client: Client, pkg: Package) -> list[str]:
        s = self.s
        days = days_until(AT)
        rolled_at = roll_dates({"at": AT}, days)["at"]
        sample = list(synth_patients(SEED, s.apply_sample))
        ids = [res[0]["id"] for res in sample]
        log(f"$apply: loading {len(sample)} patients, dates moved {days:+d} days")
        rolled = [roll_dates(as_bundle(res), days) for res in sample]
        for b in rolled:
            load_patient(client, b)
        path = self.work / "apply-sample.ndjson"
        write_population(path, ([e["resource"] for e in b["entry"]] for b in rolled), "ndjson")
        plans = recommendation_plans(client, self.cfg.package.pathway)
        local, hapi, java = Series(), Series(), Series()
        local_docs: list[dict[str, Any]] = []
        hapi_docs: list[dict[str, Any]] = []
        java_docs: list[dict[str, Any]] = []
        with EnginePool(2) as pool, JavaPool(self.cfg, 2) as jpool:
            drain(evaluate_population(pkg, open_population(path).records(), rolled_at, pool))  # warm-up
            drain(evaluate_opened(pkg, open_population(path), rolled_at, jpool))
            for run in range(s.runs):
                log(f"$apply vs local: run {run + 1}/{s.runs}")

                def run_java() -> None:
                    java_docs[:] = [
                        _document(r)
                        for r in evaluate_opened(pkg, open_population(path), rolled_at, jpool)
                        if not r.error
                    ]

                java.add(len(ids) / timed(run_java))

                def run_local() -> None:
                    local_docs[:] = [
                        r.document
                        for r in evaluate_population(pkg, open_population(path).records(), rolled_at, pool)
                        if r.document
                    ]

                local.add(len(ids) / timed(run_local))

                def run_hapi() -> None:
                    hapi_docs[:] = [apply_patient(client, self.cfg.package.pathway, pid, plans) for pid in ids]

                hapi.add(len(ids) / timed(run_hapi))

        def codes(doc: dict[str, Any]) -> dict[str, list[str]]:
            return {r["id"]: sorted({c for a in r["activities"] for c in a["codes"]}) for r in doc["recommendations"]}

        agree = sum(1 for a, b in zip(local_docs, hapi_docs, strict=True) if codes(a) == codes(b))
        agree_java = sum(1 for a, b in zip(java_docs, hapi_docs, strict=True) if codes(a) == codes(b))
        same_docs = sum(1 for a, b in zip(java_docs, local_docs, strict=True) if a == b)
        ratio = local.median / hapi.median
        at_scale = self.notes.get("local_rate_2w")
        scale_line = (
            f"| ratio Java batch at {max(s.sizes):,} patients (section 1, 2 threads) / HAPI "
            f"| {at_scale / hapi.median:,.0f}× |"
            if at_scale
            else ""
        )
        self.section(
            "2. Java batch vs Node workers vs HAPI `$apply` on the same patients",
            [
                f"The first {len(ids)} patients of the population, dates moved {days:+d} days so that the data is "
                f"as old on the server's clock as at {AT}; the local engine evaluates at the moved time "
                f"({rolled_at}). HAPI: `PlanDefinition/$apply` of each of the {len(plans)} recommendations "
                "per patient (what `guideline apply` does), data read from the server. Local: population mode "
                "on each engine (the JVM reading the NDJSON; the Node workers fed by Python), started and loaded "
                "before timing, runs alternating.",
                "",
                "| engine | patients/s: median (min–max, runs) |",
                "|---|---|",
                f"| Java batch (the default engine, 2 threads) | {java.fmt('', digits=1)} |",
                f"| Node workers (the reference engine, 2 workers) | {local.fmt('', digits=1)} |",
                f"| HAPI `$apply` | {hapi.fmt('', digits=2)} |",
                f"| ratio Java batch / HAPI, same patients | {java.median / hapi.median:,.0f}× |",
                f"| ratio Node workers / HAPI, same patients | {ratio:,.0f}× |",
                *([scale_line] if scale_line else []),
                "",
                f"Locally the {len(ids)} patients go out in a few small batches (they ramp up from "
                f"{FIRST_BATCH_RECORDS} to {BATCH_RECORDS}), so both workers get work, but each batch still runs "
                "in two rounds with its per-request costs undiluted: the like-for-like figure is the lower bound.",
                "",
                f"Agreement on the last run: {agree}/{len(ids)} patients get the same recommendations and codes "
                f"from the Node workers and HAPI, {agree_java}/{len(ids)} from the Java batch and HAPI; the Java "
                f"batch and the Node workers write the same document for {same_docs}/{len(ids)}.",
            ],
        )
        jr = java.median / hapi.median
        self.target(
            "local throughput (Java batch, the default) vs HAPI `$apply`, same patients",
            "≥ 50×",
            f"{jr:,.0f}×",
            jr >= 50,
        )
        return ids

    # 3: CDS Hooks latency, ours vs a trivial baseline on the same server
    def cds(self, client: Client, patients: list[str]) -> None:
        s = self.s
        publish_resources(client, [BASELINE_PLAN], force=True)
        deadline = time.monotonic() + 180
        want = {OURS_CDS, BASELINE_ID}
        while want - {x["id"] for x in discover(client)}:
            if time.monotonic() > deadline:
                raise RuntimeError(f"CDS services {sorted(want)} not registered within 180 s")
            time.sleep(1)
        services = (OURS_CDS, BASELINE_ID)
        for i in range(20):  # warm-up, not counted
            for sid in services:
                call(client, sid, patient=patients[i % len(patients)])
        lat: dict[str, list[float]] = {sid: [] for sid in services}
        by_patient: dict[str, list[float]] = {pid: [] for pid in patients}
        cards: dict[str, int] = {sid: 0 for sid in services}
        log(f"CDS: {s.cds_calls} calls to each service, interleaved")
        for i in range(s.cds_calls):
            order = services if i % 2 == 0 else services[::-1]
            for sid in order:
                t = time.perf_counter()
                resp = call(client, sid, patient=patients[i % len(patients)])
                lat[sid].append(time.perf_counter() - t)
                cards[sid] += len(resp["cards"])
                if sid == OURS_CDS:
                    by_patient[patients[i % len(patients)]].append(lat[sid][-1])
        rows = ["| service | p50 | p95 | p99 | cards returned |", "|---|---|---|---|---|"]
        for sid in services:
            p = [percentile(lat[sid], q) * 1000 for q in (50, 95, 99)]
            rows.append(f"| `{sid}` | {p[0]:.0f} ms | {p[1]:.0f} ms | {p[2]:.0f} ms | {cards[sid]} |")
        ratio95 = percentile(lat[OURS_CDS], 95) / percentile(lat[BASELINE_ID], 95)
        ratio50 = percentile(lat[OURS_CDS], 50) / percentile(lat[BASELINE_ID], 50)
        rows.append(f"| ratio ours / baseline | {ratio50:.2f}× | {ratio95:.2f}× | | |")
        # Where the tail comes from: the server's cost grows with the patient's record.
        sizes = {res[0]["id"]: len(res) for res in synth_patients(SEED, len(patients))}
        ranked = sorted(by_patient.items(), key=lambda kv: sizes.get(kv[0], 0))
        per_patient = [
            f"{sizes.get(pid, 0)} resources: {statistics.median(v) * 1000:.0f} ms"
            for pid, v in (ranked[:2] + ranked[-3:])
            if v
        ]
        self.section(
            "3. CDS Hooks `patient-view` latency on the local server",
            [
                f"{s.cds_calls} calls to each service (after 20 warm-up calls each), alternating, over the "
                f"{len(patients)} loaded patients; no prefetch (the server reads the data it stores). Ours: "
                f"`{OURS_CDS}` (the recommendation with the most logic). Baseline: `{BASELINE_ID}`, a "
                "PlanDefinition with one unconditional action and no library, on the same server: the "
                "difference is the cost our CQL adds.",
                "",
                *rows,
                "",
                f"Median latency of `{OURS_CDS}` by patient (smallest and largest records): "
                + "; ".join(per_patient)
                + ". Since the server fixes of 2026-11-25 (no 500 ms search polls, code filters in the "
                "database; see 'Profiling') the record's size hardly matters: what remains is the engine "
                "itself, a dozen database searches per call (one per retrieve) and the CQL evaluation, which "
                "the baseline does not do at all. Before those fixes this table read p50 112 ms, p95 2,597 ms "
                "(118× the baseline), with 877-resource records at 3.6 s.",
            ],
        )
        self.target("CDS `patient-view` p95, ours vs trivial baseline", "≤ 1.5×", f"{ratio95:.2f}×", ratio95 <= 1.5)

    # 3b: the pathway service (one call) vs the six per-recommendation calls, same patients
    def pathway_vs_six(self, client: Client, patients: list[str]) -> None:
        """One `gl-treatment` call vs the six per-recommendation calls in a row, alternating, same patient."""
        n = max(20, self.s.cds_calls // 3)
        six = [x["id"] for x in discover(client) if x["id"].startswith("GLR") and x["hook"] == "patient-view"]
        if len(six) != 6:
            raise RuntimeError(f"expected six per-recommendation services, found {sorted(six)}")
        one_lat, six_lat = pathway_vs_six_latencies(client, patients, six, n)
        rows = ["| what | p50 | p95 |", "|---|---|---|"]
        for what, lat in ((f"`{PATHWAY_CDS}`, one call", one_lat), ("the six services, sum of one round", six_lat)):
            rows.append(f"| {what} | {percentile(lat, 50) * 1000:.0f} ms | {percentile(lat, 95) * 1000:.0f} ms |")
        r50 = percentile(one_lat, 50) / percentile(six_lat, 50)
        r95 = percentile(one_lat, 95) / percentile(six_lat, 95)
        rows.append(f"| ratio one / six | {r50:.2f}× | {r95:.2f}× |")
        self.section(
            "3b. CDS Hooks: the pathway service vs the six per-recommendation calls",
            [
                f"{n} rounds (after 5 warm-up rounds), alternating which goes first, over the {len(patients)} "
                f"loaded patients; data on the server (`fhirServer` = the server). One `{PATHWAY_CDS}` call reads "
                "the patient once through its prefetch templates (in-process database searches) and applies the "
                "six recommendation PlanDefinitions to that in one request (one processor, the compiled-library "
                "cache, GLPathway's order); the six calls each apply one, their engine searching the database for "
                "each retrieve.",
                "",
                *rows,
            ],
        )
        self.target("CDS pathway call p50 vs sum of six calls", "≤ 0.5×", f"{r50:.2f}×", r50 <= 0.5)

    def step(self, title: str, fn: Callable[[], Any]) -> Any:
        """Run one part; a failure is recorded in the report (and fails the run) but the other parts go on."""
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - reported in BENCHMARKS.md and in the exit code
            log(f"{title} FAILED: {type(e).__name__}: {e}")
            self.failures.append(title)
            self.section(f"{title}: FAILED", [f"`{type(e).__name__}: {e}`"])
            return None

    def spark(self) -> None:
        """Spark local[2] vs the local path on the same export; local[1] vs local[2] (tools/bench_spark.py)."""
        quick = max(self.s.sizes) < 10000
        n = SPARK_PATIENTS_QUICK if quick else SPARK_PATIENTS
        lines, fig = bench_spark.measure(self.work, n, 1 if quick else SPARK_RUNS)
        self.section("6. Population mode on Apache Spark (embedded)", lines)
        self.target(
            f"Spark `local[2]` vs the local path, same {n:,}-patient export (wall time)",
            "(recorded)",
            f"{fig['overhead']:.2f}× (local[2] / local[1] throughput: {fig['scaling']:.2f}×)",
            None,
        )

    def server_parts(self) -> None:
        assert self.server is not None  # noqa: S101
        with Client(self.server, timeouts=Timeouts(read_s=300)) as client, Engine() as eng:
            pkg = build_package(self.cfg, eng)
            log(f"server: publishing the package to {self.server}")
            publish_resources(client, pkg.resources)
            self.step("publish", lambda: self.publish(client, pkg))
            patients = self.step("$apply", lambda: self.hapi_apply(client, pkg))
            if patients:
                self.step("CDS Hooks", lambda: self.cds(client, patients))
                self.step("CDS pathway vs six", lambda: self.pathway_vs_six(client, patients))
            self.step("build + validate", lambda: self.build_validate(client))

    # ---------------------------------------------------------------- report

    def render(self, argv: list[str], started: float, info: dict[str, str]) -> str:
        minutes = (time.monotonic() - started) / 60
        out = [
            "# Benchmarks",
            "",
            "Generated by `scripts/bench` (do not edit by hand; rerun it). Every figure is the median of the "
            "runs shown, with min–max; figures that are compared were measured side by side in the same run, "
            "alternating. The machine is shared and noisy: compare ratios, not absolute times.",
            "",
            f"- Command: `scripts/bench{' ' + ' '.join(argv) if argv else ''}` ({minutes:.0f} min)",
            f"- Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
            f"- Machine: {info['cores']} cores ({info['cpu']}), {info['memory']} memory, {info['os']}; load "
            f"average at start {info['load']}",
            f"- Software: Python {info['python']}, Node {info['node']}, {info['java']}; HAPI FHIR 8.8.0 + "
            "clinical reasoning 4.4.0 (server/), cql-execution 3.3.2 + cql-exec-fhir 2.2.0 (local)",
            "",
            "## Targets",
            "",
            "| target | goal | measured | |",
            "|---|---|---|---|",
        ]
        for what, goal, measured, met in self.targets:
            verdict = "met" if met else ("not measured at full size" if met is None else "**missed**")
            out.append(f"| {what} | {goal} | {measured} | {verdict} |")
        for title, lines in self.sections:
            out += ["", f"## {title}", "", *lines]
        out += ["", *profiling_section(), ""]
        return "\n".join(out)


_READ_ONLY = """
import json, resource, sys, time
from pathlib import Path
from guideline.evaluation.records import open_population
t0 = time.monotonic()
with open_population(Path(sys.argv[1])) as population:
    t1 = time.monotonic()
    n = sum(1 for r in population.records() if r.error is None)
t2 = time.monotonic()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"open": t1 - t0, "read": t2 - t1, "patients": n, "rss": rss}))
"""


def pathway_vs_six_latencies(
    client: Client, patients: list[str], six: list[str], rounds: int
) -> tuple[list[float], list[float]]:
    """Seconds per pathway call and per round of the six calls, `rounds` each after 5 warm-up rounds."""
    one_lat: list[float] = []
    six_lat: list[float] = []
    for i in range(rounds + 5):
        pid = patients[i % len(patients)]
        got: dict[str, float] = {}
        for what in ("one", "six") if i % 2 == 0 else ("six", "one"):
            t = time.perf_counter()
            for sid in [PATHWAY_CDS] if what == "one" else six:
                call(client, sid, patient=pid)
            got[what] = time.perf_counter() - t
        if i >= 5:
            one_lat.append(got["one"])
            six_lat.append(got["six"])
    return one_lat, six_lat


def _read_only(path: Path, n: int) -> dict[str, float]:
    """Open and read a population in a fresh process: seconds to open (index), to read, and peak RSS in MiB."""
    out = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", _READ_ONLY, str(path)], check=True, capture_output=True, text=True, timeout=3600
    )
    got: dict[str, float] = json.loads(out.stdout)
    assert got["patients"] == n, f"{got['patients']} of {n} read"  # noqa: S101 - a broken bench must not report
    return got


def _parsed(java: JavaEngine, path: Path, n: int) -> int:
    stats = java.parse_only(path)
    return int(stats.get("records", 0)) if stats.get("records") == n else -1


def _run(pkg: Package, path: Path, pool: Any, opened: bool = False) -> int:
    population = open_population(path)
    if opened:
        return drain(evaluate_opened(pkg, population, AT, pool))
    return drain(evaluate_population(pkg, population.records(), AT, pool))


def _measure(java: JavaEngine, name: str, go: Callable[[], int], n: int) -> dict[str, float]:
    """Wall time, the JVM's and this process's CPU seconds and the JVM's peak RSS (MiB) for one run of `go`."""
    log(f"engines: {name}, {n:,} patients")
    c0, p0, t0 = java.cpu_seconds(), time.process_time(), time.perf_counter()
    got = go()
    wall, jcpu, pcpu = time.perf_counter() - t0, java.cpu_seconds() - c0, time.process_time() - p0
    assert got == n, f"{name}: {got} of {n}"  # noqa: S101 - a broken bench must not report
    log(f"engines: {name}: {n / wall:,.0f}/s wall, JVM CPU {jcpu:.1f} s, Python CPU {pcpu:.1f} s")
    return {"wall": wall, "jcpu": jcpu, "pcpu": pcpu, "rss": java.stats()["maxRssKiB"] / 1024}


def _document(result: PatientResult) -> dict[str, Any]:
    """A result's `recommend --json` document (the JVM's stream hands back only the line)."""
    if result.document is not None:
        return result.document
    doc: dict[str, Any] = json.loads(result.line or "{}")
    return doc


def _synth_parallel(path: Path, n: int) -> None:
    """Write the first n patients as grouped NDJSON with two synth processes (one per core), then join the halves."""
    half = n // 2
    parts = [path.with_name(f".{path.name}.part{i}") for i in range(2)]
    procs = [
        subprocess.Popen(  # noqa: S603 - our own synth
            [
                sys.executable,
                "-m",
                "tools.synth",
                "--patients",
                str(count),
                "--start",
                str(start),
                "--seed",
                str(SEED),
                "--format",
                "ndjson",
                "--out",
                str(part),
            ],
            cwd=toolchain.repo_root(),
        )
        for part, start, count in ((parts[0], 0, half), (parts[1], half, n - half))
    ]
    if any(proc.wait() != 0 for proc in procs):
        raise RuntimeError(f"synth of {n} patients failed")
    # The second half is appended to the first: a million patients are ~31 GB, not worth copying twice.
    with parts[0].open("ab") as out, parts[1].open("rb") as f:
        shutil.copyfileobj(f, out, 16 << 20)
    parts[1].unlink()
    os.replace(parts[0], path)


def _mean_resources(path: Path) -> float:
    patients = lines = 0
    with path.open("rb") as f:
        for raw in f:
            lines += 1
            patients += raw.startswith(b'{"resourceType":"Patient"')
    return lines / max(patients, 1)


PROFILING_HOW = (
    "How: `node --cpu-prof` on a worker fed the captured batch requests of 485 GL patients (the expensive ones), "
    "summarised by self and inclusive time; `cProfile` on the Python side of a 1,000-patient run."
)
PROFILING_ROWS = [
    (
        "`Package.key` re-hashed ~1 MB of ELM on every library evaluation: 22 ms × 7 per patient, ~70 % of "
        "single-patient `recommend`",
        "key cached per (elm, value_sets) objects (`build.py`)",
    ),
    (
        "the worker rebuilt the `cql.Library` (with FHIRHelpers) on every `execute`",
        "built once per package and library",
    ),
    (
        "one request per library per patient",
        "`batch` op: 64 patients and all their libraries per request; two rounds (the pathway gate for all, the "
        "recommendation libraries only for patients past it)",
    ),
    (
        "each recommendation library re-evaluated the shared GLCommon defines (7× per GL patient)",
        "one context per included library per patient, shared by all libraries",
    ),
    (
        "cql-exec-fhir wraps every record again at every retrieve (~25 %), then tests every record's code",
        "records wrapped once per patient; a retrieve with codes gets only records whose coding can match "
        "(permissive prefilter; the engine still applies its own filter)",
    ),
    (
        "query `distinct` walked every element of every FHIR record to build its key (~25 %)",
        "lists of records with pairwise different `resourceType/id` are returned as they are (exact: the key "
        "contains both)",
    ),
    (
        "element reads built new wrappers each time (status, effective, value re-read by every lab define)",
        "element reads remembered per wrapper while a batch runs",
    ),
    (
        "second round (2026-11-25, 1,000 patients, 1 worker): `cql.DateTime.parse` validating each FHIR dateTime "
        "with luxon format parses (7 %); `Retrieve` re-converting a record's code for every code of an expanded "
        "value set; `ModelInfo.findClass` per element wrapper (3 %)",
        "full date-times built directly (`worker/fastdatetime.mjs`, checked against `parse` on a corpus); the "
        "record's code converted once per test; `findClass` remembered. ~15 % (side by side, 3 alternating runs: "
        "88–93 → 101–114 patients/s)",
    ),
    (
        "HAPI side (CDS and `$apply`, jstack samples): the request thread slept in "
        "`SearchCoordinatorSvcImpl.getResources` (500 ms polls) whenever a CQL retrieve read past a search's first "
        "13 matches; value-set retrieves loaded every record of the type and filtered in memory",
        "server: search pre-fetch thresholds (5000, all); CR retrieves with the expanded codes in the search "
        "(`USE_INLINE_CODES`). CDS call on a 19-resource GL patient 1,200 → 68 ms, 877 resources 4,245 → 162 ms",
    ),
    (
        "publish no-op: `GET /metadata` 0.55 s (HAPI rebuilds its 1.5 MB CapabilityStatement on `no-cache`) and "
        "a 72-entry lookup batch reading every Library twice",
        "subsetted, cacheable CapabilityStatement (`_elements`, whole statement only if the subset lacks a checked "
        "part); content read once per `url|version`, ids looked up only for resources without a same-version "
        "match: no-op 0.86 → ~0.2 s",
    ),
]
PROFILING_AFTER = """
The speed-ups are active only in population batches (`plain: true` turns them off); the test suite checks that
both give identical results on synthetic populations, and that population mode matches single-patient
`recommend` on the 48 scenarios. Single-patient `recommend` on the 48 scenarios (one worker call per library, as
before) went from 300–440 ms to 30–50 ms per patient with the first two fixes (separate runs during
development, not side by side).

What remains: most of a GL patient's time is inside cql-execution and cql-exec-fhir building element wrappers
(each wrapper defines a getter per element of its type, walking the type hierarchy: ~11 % self) and the
garbage collection they cause (~17 %); neither class can be replaced from outside without forking the library.
The Python side (reading and grouping NDJSON, the walk, output) costs ~1–2 ms per patient in the parent
process, so past ~500 patients/s it would be the next limit on 2 cores. 1,000 patients/s on 2 cores would need
an engine without per-element wrapper objects (e.g. evaluating the retrieves on raw JSON): beyond fixing our
own protocol and batching.
"""


# The JVM batch evaluator (issue 14): what its profiles showed, what was changed, what is left.
JAVA_PROFILING_ROWS = [
    (
        "First version (2026-11-29, 10,000 patients, load 24-41): Python read and grouped every line "
        "(`json.loads`, 11.9 s for 10,000 patients: a ceiling of 840 patients/s on one core), sent two "
        "requests per batch; the JVM parsed each Bundle twice (Jackson tree, then HAPI); Python walked the "
        "pathway",
        "the JVM reads and groups the NDJSON itself, drops resources no retrieve can return (92,166 of "
        "588,588 lines), parses each patient once (one Bundle of the kept lines) and walks the pathway in "
        "Java; Python only writes lines: the CLI path went from 346 patients/s (quiet machine, Python reading"
        " and walking) to 570 at load 3-5 the same day, and 947-1,294 quiet (sections 1 and 1d)",
    ),
    (
        "JFR, 10,000 patients, samples after a 12 s warm-up (1,420 samples): the CQL engine 47 % (FHIR "
        "property access through `FhirModelResolver.resolvePath` alone 13 %, `HashMap$TreeNode.getTreeNode` "
        "7.5 % self); JSON parsing (HAPI's parser on Jackson) 24 %; GC, JIT and the JDK 27 %; our retrieve 6 "
        "%, reader 2 %, walk under 1 %",
        "none yet: next, a property-accessor cache (per class and path) in front of the model resolver, then "
        "a parser that builds only the elements the retrieves read. The parse-only ceiling (section 1d) is "
        "~2,000 patients/s on these 2 cores, so 2,000/s needs both",
    ),
    (
        "Memory: the JVM's RSS grew from 577 MiB (1,000 patients) to 760 MiB (1,000,000)",
        "none needed: heap capacity, not live data. `-Xlog:gc` with a full GC forced every 15 s (`jcmd PID "
        "GC.run`) over 100,000 patients: the heap after each full GC stayed at 98-102 MiB from the first "
        "minute to the end; RSS is bounded by `-Xmx1g` (`GUIDELINE_BATCH_JAVA_OPTS`)",
    ),
]


# The CDS pathway service (issues 12 and 25): its profile, what was tried, what is next.
CDS_PROFILING_ROWS = [
    (
        "3b, quiet (2026-11-29 22:40): the pathway call `gl-treatment` took p50 1.02x, p95 2.52x the sum of "
        "the six per-recommendation calls. JFR on the server during 3b (752 request-thread samples, full "
        "stacks; pathway calls and rounds of six alternate): 25 % in the loopback FHIR searches only the "
        "pathway call made for its prefetch (the 21 templates of the six services, each by patient and codes, "
        "over HTTP with JSON both ways, then the merged Bundle parsed again), as much as the six calls spend in "
        "their own database searches; CQL evaluation 16 %, CR's processor 12 %, JSON in and out 19 %",
        "tried first: the six applies of one call in parallel on a pool with one thread per core: p50 1.05x "
        "(no gain: the applies do not overlap), reverted. Then (2026-11-30): with `fhirServer` = this server the "
        "pathway call runs its templates on the database in-process (HAPI's DAOs, synchronous, `_include` "
        "kept; searches that differ only in their codes merged, 21 -> 9) and hands the resources to the engine "
        "as objects: p50 0.91x -> 0.38-0.42x in development runs of the same measurement",
    ),
    (
        "JFR after that (982 request-thread samples, pathway calls only): reading and parsing 13 "
        "PlanDefinitions per call from the database 15 %; CR resolving the ActivityDefinition of every action "
        "that fires by canonical (a database search and a JSON parse each) 10 %",
        "`KnowledgeCache`: the PlanDefinitions and CR's reads and searches of Library, ValueSet, PlanDefinition "
        "and ActivityDefinition (a repository decorator around CR's) kept parsed, handed out as copies, emptied "
        "with CR's own caches when the knowledge fingerprint changes (ActivityDefinition added to it; tested "
        "across two nodes): pathway p50 62 -> 48 ms, ratio 0.38x -> 0.33x (development runs); 3b "
        "(2026-11-30 01:40, `scripts/bench --only server`): p50 0.39x, p95 0.49x, target met",
    ),
    (
        "what is left in a pathway call (shares from the profile before the knowledge cache): the in-process "
        "template searches 14 %, CR's retrieve resolving search-parameter definitions for every retrieve 9 %, "
        "CR building a new CQL engine (a ModelManager) for each dynamic-value and condition expression 8 %, "
        "then the CQL evaluation itself",
        "not changed: the last two are inside clinical reasoning (an engine passed down, or a cached "
        "search-parameter resolver, would be upstream changes); the searches are the patient's data, read once",
    ),
    (
        "issue 25 (2026-12-07, section 7): with the data in prefetch, CR's `$apply` path cost 43.2 ms of "
        "server CPU per pathway call under 8 clients (20.3 calls/s, p95 669 ms): it builds a CQL engine for "
        "each condition and dynamic-value expression, resolves search-parameter definitions on every "
        "retrieve, and round-trips every resource through FHIR objects and JSON",
        "the evaluation core (`engine/`, shared with the batch evaluator): the stored knowledge compiled once "
        "per knowledge change, one warm engine per request thread, every condition and dynamic value of a "
        "call in one engine call over the request's data in memory, the draft requests built from the "
        "ActivityDefinitions directly (`$apply` kept behind `guideline.cds.evaluator: apply`; the channel "
        "test checks equal cards): 4.5 ms per call, 184.8 calls/s, p95 109 ms (9.6x less CPU). Then the "
        "database, half of what remained (HAPI JPA 30 %, H2 and Hibernate 20 %: the record of the cards sent, "
        "one HAPI `Basic` create per call): the cards sent go to a plain table (`gl_cds_card`, one batched JDBC "
        "insert per call, still synchronous so feedback right after the response finds its card), and the "
        "prefetch is parsed once (HAPI's parser reads the request's JSON tree): 2.6 ms per call, 344.5 calls/s, "
        "p95 58 ms, one client p50 11 ms (section 7, 2026-12-08). What remains: the CQL engine about half; "
        "channel (b) is bound by the EHR's reads on the same cores (its JVM 71 ms CPU per call, ours 30 ms)",
    ),
]


def profiling_section() -> list[str]:
    """The profiling section: the Node worker's findings and fixes, the JVM batch evaluator's, the CDS pathway's."""
    rows = ["| finding (share of worker CPU before) | fix (ours) |", "|---|---|"]
    rows += [f"| {finding} | {fix} |" for finding, fix in PROFILING_ROWS]
    return [
        "## Profiling and what was changed",
        "",
        PROFILING_HOW,
        "",
        *rows,
        "",
        PROFILING_AFTER.strip(),
        "",
        "### The JVM batch evaluator (`--engine java`, the default)",
        "",
        "| finding | change (ours) |",
        "|---|---|",
        *(f"| {finding} | {change} |" for finding, change in JAVA_PROFILING_ROWS),
        "",
        "### The CDS pathway service (`gl-treatment`)",
        "",
        "| finding | change (ours) |",
        "|---|---|",
        *(f"| {finding} | {change} |" for finding, change in CDS_PROFILING_ROWS),
    ]


def main(argv: list[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:1] == ["--deploy"]:
        return deploybench.main(given[1:])
    if given[:1] == ["--synthea"]:
        return bench_synthea.main(given[1:])
    if given[:1] == ["--measures"]:
        return bench_measures.main(given[1:])
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Measure and write BENCHMARKS.md.",
        epilog="scripts/bench --cds [--quick]: CDS Hooks under load and the server JIT choice (tools/bench_cds.py, "
        "its own servers, its own BENCHMARKS.md section); scripts/bench --synthea [--patients N ...] [--seed S] "
        "[--work DIR] [--runs R] [--skip PARTS] [--timeout S]: Synthea records as a Bulk export sends them "
        "(tools/bench_synthea.py, its own BENCHMARKS.md block); scripts/bench --measures [--patients N] "
        "[--synthea DIR] [--runs R]: the indicator Measures beside recommend --population (tools/bench_measures.py, "
        "its own BENCHMARKS.md block)",
    )
    p.add_argument("--quick", action="store_true", help="fewer, smaller runs for development (no 10,000 run)")
    p.add_argument(
        "--server", default=None, metavar="URL", help="FHIR base of the local server (scripts/bench starts it)"
    )
    p.add_argument("--out", type=Path, default=None, help="report file (default BENCHMARKS.md; --quick: .run/)")
    p.add_argument("--work", type=Path, default=None, help="folder for synthetic data (default: a temp folder)")
    p.add_argument(
        "--only", choices=("local", "server", "engines", "spark"), default=None, help="measure only one part"
    )
    p.add_argument("--patients", type=int, default=None, help="patients for the engines part (default 10,000)")
    p.add_argument(
        "--scale",
        type=int,
        default=None,
        metavar="N",
        help="also run the CLI once at N patients (e.g. 1000000: ~31 GB of input in --work, ~30 min)",
    )
    p.add_argument(
        "--synthea",
        action="store_true",
        help="instead: Synthea populations (first argument; the rest go to tools/bench_synthea.py)",
    )
    p.add_argument(
        "--measures",
        action="store_true",
        help="instead: the indicator Measures beside population mode (first argument; the rest go to "
        "tools/bench_measures.py)",
    )
    p.add_argument(
        "--deploy",
        action="store_true",
        help="instead: the deployment set-ups side by side (first argument; the rest go to tools/deploybench.py)",
    )
    args = p.parse_args(argv)
    root = toolchain.repo_root()
    out = args.out or (root / ".run" / "BENCHMARKS.quick.md" if args.quick else root / "BENCHMARKS.md")
    started = time.monotonic()
    info = machine()
    work = args.work or Path(tempfile.mkdtemp(prefix="guideline-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    settings = Settings.of(args.quick)
    if args.patients is not None:
        settings = dataclasses.replace(settings, engine_patients=args.patients)
    if args.scale is not None:
        settings = dataclasses.replace(settings, scale=args.scale)
    bench = Bench(settings, work, args.server)
    try:
        if args.only in (None, "local"):
            bench.step("local population", bench.local)
        if args.only in (None, "engines"):
            bench.step("engines", bench.engines)
        if args.only in (None, "spark"):
            bench.step("Spark", bench.spark)
        if args.only in (None, "server"):
            if args.server is None:
                raise SystemExit("bench: the server parts need --server (scripts/bench starts one)")
            bench.server_parts()
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    given = list(sys.argv[1:] if argv is None else argv)
    # The server URL is the bench's own (a free port): not part of the command a reader reruns.
    shown = [a for i, a in enumerate(given) if a != "--server" and (i == 0 or given[i - 1] != "--server")]
    out.parent.mkdir(parents=True, exist_ok=True)
    text = bench.render(shown, started, info)
    old = out.read_text(encoding="utf-8") if out.exists() else ""
    # Four sections come from their own runs and are kept as they were: the CDS load block
    # (`scripts/bench --cds`, between its markers), the Synthea block (`scripts/bench --synthea`), the indicators
    # block (`scripts/bench --measures`) and the
    # deployment section (`scripts/bench --deploy`).
    old, synthea_block = bench_synthea.BLOCK.take(old)
    old, measures_block = bench_measures.BLOCK.take(old)
    old, cds_block = CDS_BLOCK.take(old)
    kept = deploy_section(old)
    if kept:
        text = splice_section(text, kept)
    if synthea_block:
        text = text.rstrip("\n") + "\n\n" + synthea_block
    if measures_block:
        text = text.rstrip("\n") + "\n\n" + measures_block
    if cds_block:
        text = text.rstrip("\n") + "\n\n" + cds_block
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    log(f"wrote {out}")
    if bench.failures:
        log(f"failed parts: {', '.join(bench.failures)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
