"""`scripts/bench --measures`: the indicator Measures beside `recommend --population` on the same input.

Two inputs: N synthetic patients (scripts/synth, grouped NDJSON) and a Synthea population with GL added (a Bulk
Data export folder: `--synthea DIR`, e.g. one `scripts/bench --synthea` made). Each is run `--runs` times with
`guideline measure --population X --period P` and `guideline recommend --population X --at END-OF-P`, alternating
round by round so load drifts hit both alike; the block between MEAS_BEGIN and MEAS_END of BENCHMARKS.md gets
the medians and their ratio (appended when absent).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from guideline.core import toolchain
from tools import benchkit
from tools.benchkit import Block

MEAS_BEGIN = "<!-- measures-bench:begin (scripts/bench --measures) -->"
MEAS_END = "<!-- measures-bench:end -->"
BLOCK = Block(MEAS_BEGIN, MEAS_END)
PERIOD = "2026-01-01/2026-12-31"
AT = "2026-12-31T23:59:59Z"  # the evaluation time `measure` uses for PERIOD
# The synthetic data's "as of" date: inside PERIOD, so the labs and orders fall in it.
SYNTH_AT = "2026-12-01"


def log(msg: str) -> None:
    """Progress on stderr."""
    benchkit.log(msg, "bench --measures")


class BenchError(RuntimeError):
    """A measured command failed."""


def run_cli(argv: list[str], timeout: float) -> float:
    """Wall seconds of `guideline ARGV` in a fresh process (start-up and package build included)."""
    start = time.monotonic()
    done = subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "guideline.cli.main", *argv],
        cwd=toolchain.repo_root(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise BenchError(f"guideline {' '.join(argv[:2])} exited {done.returncode}: {tail}")
    return time.monotonic() - start


@dataclass
class Measured:
    """One input's runs: wall seconds per command."""

    name: str
    path: Path
    patients: int
    measure: list[float] = field(default_factory=list)
    recommend: list[float] = field(default_factory=list)


def synthetic(work: Path, n: int, seed: int, timeout: float) -> Path:
    """N synthetic patients as grouped NDJSON, made once into WORK."""
    path = work / f"synth-{n}-{seed}.ndjson"
    if not path.is_file():
        log(f"generating {n:,} synthetic patients into {path}")
        argv = ["--patients", str(n), "--seed", str(seed), "--at", SYNTH_AT, "--out", str(path)]
        subprocess.run(  # noqa: S603 - our own script
            [sys.executable, "-m", "tools.synth", *argv], cwd=toolchain.repo_root(), check=True, timeout=timeout
        )
    return path


def count_patients(path: Path) -> int:
    """Patients in a grouped NDJSON file or a Bulk export folder (its Patient file's lines)."""
    target = path / "Patient.ndjson" if path.is_dir() else path
    with target.open("rb") as f:
        if path.is_dir():
            return sum(1 for line in f if line.strip())
        return sum(1 for line in f if b'"resourceType":"Patient"' in line or b'"resourceType": "Patient"' in line)


def measure(m: Measured, runs: int, timeout: float) -> None:
    """Alternate `measure` and `recommend` on M's input, `runs` rounds."""
    with tempfile.TemporaryDirectory(prefix="bench-measures-") as tmp:
        for i in range(runs):
            out = Path(tmp) / f"out-{i}"
            log(f"{m.name}: round {i + 1} of {runs}")
            m.measure.append(
                run_cli(["measure", "--population", str(m.path), "--period", PERIOD, "--out", f"{out}.json"], timeout)
            )
            m.recommend.append(
                run_cli(["recommend", "--population", str(m.path), "--at", AT, "--out", f"{out}.ndjson"], timeout)
            )


def report(ms: Sequence[Measured], runs: int, seconds: float) -> str:
    """The BENCHMARKS.md block."""
    lines = [
        MEAS_BEGIN,
        "",
        "## Indicators beside population mode (issue 26)",
        "",
        f"`guideline measure --population PATH --period {PERIOD}` (every indicator Measure, Java engine) beside "
        f"`guideline recommend --population PATH --at {AT}` on the same input, each a fresh process (start-up "
        f"and package build included), alternating, {runs} rounds; medians. Both evaluate on the same JVM; a Bulk "
        "export is read and grouped by Python for both, while grouped NDJSON is read by the JVM itself for "
        "`recommend` and by Python (batches sent to the JVM) for `measure`. The measures evaluate five small "
        "libraries over GLCommon; population mode walks the pathway. "
        f"Measured on {os.cpu_count()} cores shared with other work (other sessions were building "
        f"and testing at the same time), in {seconds / 60:.0f} min; made by `scripts/bench --measures`.",
        "",
        "| Input | Patients | `measure` (s) | `recommend` (s) | measure / recommend |",
        "|---|---|---|---|---|",
    ]
    for m in ms:
        a, b = statistics.median(m.measure), statistics.median(m.recommend)
        lines.append(f"| {m.name} | {m.patients:,} | {a:.1f} | {b:.1f} | {a / b:.2f} |")
    lines += ["", MEAS_END, ""]
    return "\n".join(lines)


def make_parser() -> argparse.ArgumentParser:
    """The options of `scripts/bench --measures`."""
    p = argparse.ArgumentParser(prog="scripts/bench --measures", description=__doc__.splitlines()[0])
    p.add_argument("--patients", type=int, default=10_000, help="synthetic patients (default 10,000)")
    p.add_argument("--seed", type=int, default=42, help="synthetic data seed (default 42)")
    p.add_argument("--synthea", type=Path, default=None, help="a Synthea Bulk export folder with GL added")
    p.add_argument("--runs", type=int, default=3, help="rounds per input (default 3)")
    p.add_argument("--work", type=Path, default=Path(".run"), help="where the synthetic data is kept (default .run)")
    p.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"), help="report file (default BENCHMARKS.md)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per command (default 3600)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, then splice the block into --out; exit 1 with the failing command's message."""
    args = make_parser().parse_args(argv)
    started = time.monotonic()
    args.work.mkdir(parents=True, exist_ok=True)
    try:
        inputs = []
        path = synthetic(args.work, args.patients, args.seed, args.timeout)
        inputs.append(
            Measured(f"synthetic (`scripts/synth --patients {args.patients} --seed {args.seed}`)", path, args.patients)
        )
        if args.synthea is not None:
            inputs.append(
                Measured(f"Synthea with GL added (`{args.synthea.name}`)", args.synthea, count_patients(args.synthea))
            )
        for m in inputs:
            measure(m, args.runs, args.timeout)
    except (BenchError, subprocess.SubprocessError, OSError) as e:
        log(f"failed: {e}")
        return 1
    block = report(inputs, args.runs, time.monotonic() - started)
    BLOCK.write(args.out, block)
    log(f"wrote the block into {args.out}")
    sys.stdout.write(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
