"""Benchmark section for the Spark job: Spark local[2] vs the local path on one export, and local[1] vs local[2]."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from guideline.core import toolchain
from tools.synth import synth_patients, write_population

SEED = 20261124
AT = "2026-06-01T12:00:00Z"
# "...; 12.3 s evaluating (81 patients/s, ..." (local) and "...; 12.3 s in Spark local[2] (81 patients/s, ..." (Spark)
_RATE = re.compile(r"evaluated, .*?; ([\d.]+) s (?:evaluating|in Spark \S+) \(([\d,]+) patients/s")


@dataclass
class Run:
    """One CLI run: wall seconds, the CLI's own evaluation seconds and rate (after its start-up)."""

    wall: float
    evaluating: float
    rate: float


def _cli(argv: list[str]) -> Run:
    """Run `guideline ARGV` in a fresh process as a user would, and read its summary line."""
    start = time.monotonic()
    res = subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "guideline.cli.main", *argv],
        cwd=toolchain.repo_root(),
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.monotonic() - start
    m = _RATE.search(res.stderr)
    if res.returncode != 0 or m is None:
        tail = " | ".join(res.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"guideline {' '.join(argv[:2])} exited {res.returncode}: {tail}")
    return Run(wall, float(m[1]), float(m[2].replace(",", "")))


def export(work: Path, n: int) -> Path:
    """The benchmark export: `scripts/synth --format bulk --seed SEED --patients n` (made once per work folder)."""
    folder = work / f"spark-bulk-{n}"
    if not folder.exists():
        write_population(folder, synth_patients(SEED, n), "bulk")
    return folder


def measure(work: Path, n: int, runs: int) -> tuple[list[str], dict[str, float]]:
    """Side by side, alternating: local path (2 JVM threads), Spark local[2], Spark local[1]; the report lines."""
    folder = export(work, n)
    kinds = {
        "local path (`recommend --population --workers 2`)": ["recommend", "--population", str(folder)],
        "Spark `local[2]`": ["population-spark", str(folder), "--master", "local[2]"],
        "Spark `local[1]`": ["population-spark", str(folder), "--master", "local[1]"],
    }
    got: dict[str, list[Run]] = {k: [] for k in kinds}
    for run in range(runs):
        for kind, argv in kinds.items():
            out = work / f"spark-out-{run}-{len(got[kind])}-{abs(hash(kind)) % 1000}"
            extra = ["--workers", "2", "--out", str(out) + ".ndjson"] if argv[0] == "recommend" else ["--out", str(out)]
            sys.stderr.write(f"bench: spark section, {kind}, {n} patients, run {run + 1}/{runs}\n")
            got[kind].append(_cli([*argv, "--at", AT, *extra]))
            r = got[kind][-1]
            sys.stderr.write(f"bench:   wall {r.wall:.1f} s, evaluating {r.evaluating:.1f} s, {r.rate:,.0f}/s\n")
    med = {k: sorted(r.wall for r in v)[len(v) // 2] for k, v in got.items()}
    rate = {k: sorted(r.rate for r in v)[len(v) // 2] for k, v in got.items()}
    local, s2, s1 = kinds
    rows = [
        "| run | wall s (median, runs) | evaluating s | patients/s evaluating |",
        "|---|---|---|---|",
    ]
    for k, v in got.items():
        ev = sorted(r.evaluating for r in v)[len(v) // 2]
        rows.append(f"| {k} | {med[k]:.1f} (n={len(v)}) | {ev:.1f} | {rate[k]:,.0f} |")
    figures = {
        "overhead": med[s2] / med[local],
        "overhead_eval": rate[local] / rate[s2],
        "scaling": rate[s2] / rate[s1],
        "n": float(n),
    }
    lines = [
        f"The same export (`scripts/synth --format bulk --seed {SEED} --patients {n:,}`) through the local path "
        "and the Spark job (`guideline population-spark`, embedded), each as a user runs it in a fresh process, "
        "alternating. Wall time includes everything (package build, JVM and Spark start, grouping, writing the "
        "results; Spark writes NDJSON and Parquet). 'Evaluating' is each CLI's own figure after its start-up: "
        "for Spark, the whole job (reading, grouping by patient with shuffles, evaluation, both writes).",
        "",
        *rows,
        "",
        f"Spark `local[2]` / local path, wall time: **{figures['overhead']:.2f}×** (evaluating rate, local / "
        f"Spark: {figures['overhead_eval']:.2f}×). Throughput `local[2]` / `local[1]`: "
        f"**{figures['scaling']:.2f}×**.",
    ]
    return lines, figures
