"""`scripts/bench --synthea`: population mode on Synthea records as an EHR's Bulk export sends them -> BENCHMARKS.md.

For each population size N it generates (once; reused from `--work`) a Synthea population with
`scripts/synth --synthea N --seed S --labs-share 0.3` (GL added to every patient, untrimmed: every resource Synthea
writes), gzips a copy once, then measures side by side in one run: the raw read of the same bytes (`wc -l`, a
Python line count: the ceiling), `guideline recommend --population` with the Java engine with the push-down and
with `--read-all`, the same from `.ndjson.gz`, `--engine js` once, and `guideline population-spark` `local[2]`
with and without the push-down. Each CLI runs in a fresh process as a user runs it; its own stderr lines give the
grouping, start-up and evaluating times and its peak RSS. The result replaces only the block between SYN_BEGIN and
SYN_END of BENCHMARKS.md (appended when absent); a full `scripts/bench` keeps it as it was.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import os
import re
import shutil
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
from tools.benchkit import Block, machine

SYN_BEGIN = "<!-- synthea-bench:begin (scripts/bench --synthea) -->"
SYN_END = "<!-- synthea-bench:end -->"
BLOCK = Block(SYN_BEGIN, SYN_END)
AT = "2026-12-01T12:00:00Z"  # Synthea's fixed reference date (tools/synthea.py), so the records' dates fit it
LABS_SHARE = "0.3"
PARTS = ("read-all", "gz", "js", "spark")
# Targets of issue 24 (uncompressed export end to end; gzipped; memory flat between sizes).
TARGET_RATE = 200.0
TARGET_RAW_SHARE = 0.5
TARGET_GZ_RATE = 100.0
TARGET_FLAT = 0.10

_GROUPED = re.compile(
    r"([\d,]+) resources grouped by patient in ([\d.]+) s(?: \(([\d,]+) no retrieve can return left out\))?"
)
_SUMMARY = re.compile(
    r"population: ([\d,]+) records from .*?: ([\d,]+) evaluated, [\d,]+ skipped; ([\d.]+) s "
    r"(?:evaluating|in Spark \S+) \(([\d,]+) patients/s.*?after ([\d.]+) s start-up"
)
_MEMORY = re.compile(r"memory: peak RSS (\d+) MiB \([^)]*\)(?:, ([\d/]+) MiB \(workers\))?")


def log(msg: str) -> None:
    """Progress on stderr."""
    benchkit.log(msg, "bench --synthea")


def _int(text: str | None) -> int:
    return int(text.replace(",", "")) if text else 0


@dataclass
class Parsed:
    """What a population CLI's stderr says about its run (None: the line was not there)."""

    records: int = 0
    evaluated: int = 0
    evaluating: float | None = None
    startup: float | None = None
    rate: float | None = None
    grouping: float | None = None  # recommend on a Bulk folder: the index build (push-down decided there)
    resources: int | None = None
    left_out: int = 0
    own_rss: int | None = None  # MiB, the CLI's Python process (the driver's, for Spark)
    worker_rss: list[int] = field(default_factory=list)  # MiB, each engine process (one JVM for --engine java)


def parse_stderr(text: str) -> Parsed:
    """The figures of `recommend --population` / `population-spark` from their stderr lines:
    "population: ... N resources grouped by patient in X s (K ... left out)", "population: R records from ...:
    E evaluated, ...; Y s evaluating (P patients/s, ...) after Z s start-up" (or "Y s in Spark local[2] (...)"),
    "memory: peak RSS A MiB (this process), B/C MiB (workers)"."""
    p = Parsed()
    if m := _GROUPED.search(text):
        p.resources, p.grouping, p.left_out = _int(m[1]), float(m[2]), _int(m[3])
    if m := _SUMMARY.search(text):
        p.records, p.evaluated = _int(m[1]), _int(m[2])
        p.evaluating, p.rate, p.startup = float(m[3]), float(m[4].replace(",", "")), float(m[5])
    if m := _MEMORY.search(text):
        p.own_rss = int(m[1])
        p.worker_rss = [int(x) for x in m[2].split("/")] if m[2] else []
    return p


@dataclass
class Run:
    """One CLI run: wall seconds, its parsed stderr, the peak of its whole process tree's summed RSS (MiB)."""

    wall: float
    parsed: Parsed
    tree_rss: int


def session_rss(sid: int) -> int:
    """The summed RSS (KiB) of the processes of session `sid` (a CLI started in its own session: the CLI, its JVM,
    Spark's JVM and Python workers), from /proc; processes that end while read are skipped."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # the fields after the command's closing parenthesis: state ppid pgrp session ...
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid:
                status = (stat.parent / "status").read_text()
                total += int(status.split("VmRSS:", 1)[1].split()[0]) if "VmRSS:" in status else 0
        except (OSError, IndexError, ValueError):
            continue
    return total


class BenchError(RuntimeError):
    """A measured command failed."""


def run_cli(argv: list[str], timeout: float) -> Run:
    """`guideline ARGV` in a fresh process; wall time, its stderr figures and its tree's peak RSS (wait4)."""
    cmd = [sys.executable, "-m", "guideline.cli.main", *argv]
    with tempfile.TemporaryFile("w+", encoding="utf-8") as err:
        start = time.monotonic()
        proc = subprocess.Popen(  # noqa: S603 - our own CLI
            cmd, cwd=toolchain.repo_root(), stdout=subprocess.DEVNULL, stderr=err, start_new_session=True
        )
        deadline = start + timeout
        peak, sampled = 0, 0.0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            now = time.monotonic()
            if now > deadline:
                os.killpg(proc.pid, 9)
                os.wait4(proc.pid, 0)
                raise BenchError(f"guideline {' '.join(argv[:2])}: over {timeout:.0f} s, stopped")
            if now - sampled >= 0.5:  # a /proc scan: cheap at this rate, and the tree's RSS moves slowly
                peak, sampled = max(peak, session_rss(proc.pid)), now
            time.sleep(0.05)
        wall = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read()
    parsed = parse_stderr(text)
    if proc.returncode != 0 or parsed.rate is None:
        tail = " | ".join(text.strip().splitlines()[-3:])
        raise BenchError(f"guideline {' '.join(argv[:2])} exited {proc.returncode}: {tail}")
    # wait4's ru_maxrss: the largest single process (with its waited-for descendants), a floor for short runs
    return Run(wall, parsed, max(peak, usage.ru_maxrss) // 1024)


# ---------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class Corpus:
    """One Synthea population: the uncompressed export, its gzipped copy, its size."""

    n: int
    seed: int
    folder: Path  # <work>/synthea-N-S
    command: str

    @property
    def export(self) -> Path:
        return self.folder / "export"

    @property
    def gz(self) -> Path:
        return self.folder / "export-gz"


def corpus(work: Path, n: int, seed: int, timeout: float, *, gz: bool = True) -> Corpus:
    """The population for N and the seed: made once with scripts/synth (atomic: its --out is renamed into place);
    with `gz`, its gzipped copy too (made once)."""
    folder = work / f"synthea-{n}-{seed}"
    c = Corpus(n, seed, folder, f"scripts/synth --synthea {n} --seed {seed} --labs-share {LABS_SHARE} --out DIR")
    if not (c.export / "Patient.ndjson").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        log(f"generating {c.command.replace('DIR', str(c.export))} (Synthea: ~2-3 min per 60 patients on 2 cores)")
        argv = ["--synthea", str(n), "--seed", str(seed), "--labs-share", LABS_SHARE, "--out", str(c.export)]
        subprocess.run(  # noqa: S603 - our own script
            [sys.executable, "-m", "tools.synth", *argv], cwd=toolchain.repo_root(), check=True, timeout=timeout
        )
    if gz and not (c.gz / "Patient.ndjson.gz").is_file():
        log(f"gzipping a copy into {c.gz}")
        tmp = Path(tempfile.mkdtemp(prefix=".export-gz.", dir=folder))
        try:
            for f in sorted(c.export.glob("*.ndjson")):
                with f.open("rb") as src, gzip.open(tmp / f"{f.name}.gz", "wb", compresslevel=6) as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(tmp, c.gz)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return c


@dataclass
class Size:
    """A corpus's size: patients, resources, bytes (uncompressed and gzipped)."""

    patients: int
    resources: int
    bytes: int
    gz_bytes: int


def size_of(c: Corpus) -> Size:
    """Counted from the files (one resource a line)."""
    files = sorted(c.export.glob("*.ndjson"))
    with (c.export / "Patient.ndjson").open("rb") as f:
        patients = sum(1 for line in f if line.strip())
    resources = 0
    for p in files:
        with p.open("rb") as f:
            resources += sum(1 for line in f if line.strip())
    gz = sum(p.stat().st_size for p in c.gz.glob("*.ndjson.gz"))
    return Size(patients, resources, sum(p.stat().st_size for p in files), gz)


# ---------------------------------------------------------------- raw reads (the ceiling)


def wc_read(folder: Path) -> float:
    """Seconds for `wc -l` of the folder's NDJSON files."""
    files = [str(p) for p in sorted(folder.glob("*.ndjson"))]
    t = time.perf_counter()
    subprocess.run(["wc", "-l", *files], check=True, stdout=subprocess.DEVNULL, timeout=3600)  # noqa: S603,S607
    return time.perf_counter() - t


def python_read(folder: Path, gz: bool = False) -> float:
    """Seconds for a Python line count (`for line in file`) of the folder's NDJSON (or .ndjson.gz) files."""
    t = time.perf_counter()
    n = 0
    for p in sorted(folder.glob("*.ndjson.gz" if gz else "*.ndjson")):
        with gzip.open(p, "rb") if gz else p.open("rb") as f:
            for _ in f:
                n += 1
    return time.perf_counter() - t


# ---------------------------------------------------------------- measuring


@dataclass
class Measured:
    """Everything measured at one N."""

    corpus: Corpus
    size: Size
    raw: dict[str, list[float]] = field(default_factory=dict)
    runs: dict[str, list[Run]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


# Row key -> (label, the command shown with DIR/OUT for the folders)
KINDS = {
    "java": ("Java, push-down (default)", "guideline recommend --population DIR --engine java --at AT --out OUT"),
    "java-all": (
        "Java, `--read-all`",
        "guideline recommend --population DIR --engine java --read-all --at AT --out OUT",
    ),
    "gz": ("Java, push-down, `.ndjson.gz`", "guideline recommend --population DIR.gz --engine java --at AT --out OUT"),
    "js": ("Node (`--engine js`), push-down", "guideline recommend --population DIR --engine js --at AT --out OUT"),
    "spark": ("Spark `local[2]`, push-down", "guideline population-spark DIR --master local[2] --at AT --out OUT"),
    "spark-all": (
        "Spark `local[2]`, `--read-all`",
        "guideline population-spark DIR --master local[2] --read-all --at AT --out OUT",
    ),
}


def _argv(kind: str, c: Corpus, out: Path) -> list[str]:
    if kind.startswith("spark"):
        argv = ["population-spark", str(c.export), "--master", "local[2]", "--at", AT, "--out", str(out)]
    else:
        src = c.gz if kind == "gz" else c.export
        engine = "js" if kind == "js" else "java"
        argv = ["recommend", "--population", str(src), "--engine", engine, "--at", AT, "--out", str(out)]
    return [*argv, "--read-all"] if kind.endswith("-all") else argv


def measure(c: Corpus, runs: int, skip: set[str], timeout: float) -> Measured:
    """Raw reads and the CLI runs, alternating round by round (so load drifts hit every kind alike)."""
    m = Measured(c, size_of(c))
    kinds = ["java"]
    kinds += [] if "read-all" in skip else ["java-all"]
    kinds += [] if "gz" in skip else ["gz"]
    kinds += [] if "js" in skip else ["js"]
    kinds += [] if "spark" in skip else ["spark"] + ([] if "read-all" in skip else ["spark-all"])
    repeat = {"java": runs, "gz": runs}  # the rest once: slow (read-all, Node, Spark)
    m.raw = {"wc": [], "python": [], "python-gz": []}
    out = c.folder / "out"
    out.mkdir(exist_ok=True)
    for r in range(max(runs, 1)):
        m.raw["wc"].append(wc_read(c.export))
        m.raw["python"].append(python_read(c.export))
        if "gz" not in skip:
            m.raw["python-gz"].append(python_read(c.gz, gz=True))
        for kind in kinds:
            if r >= repeat.get(kind, 1) or kind in m.failed:
                continue
            log(f"N={c.n}: {KINDS[kind][0]}, run {r + 1}/{repeat.get(kind, 1)}")
            target = out / (f"{kind}-{r}" if kind.startswith("spark") else f"{kind}-{r}.ndjson")
            try:
                run = run_cli(_argv(kind, c, target), timeout)
            except BenchError as e:
                log(f"N={c.n}: {kind} failed: {e}")
                m.failed[kind] = str(e)
                continue
            finally:
                shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
            m.runs.setdefault(kind, []).append(run)
            p = run.parsed
            log(f"  wall {run.wall:.1f} s, evaluating {p.evaluating} s ({p.rate:,.0f}/s), tree peak {run.tree_rss} MiB")
    return m


# ---------------------------------------------------------------- the block


def _med(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _fmt(values: Sequence[float], digits: int = 1) -> str:
    if len(values) == 1:
        return f"{values[0]:,.{digits}f}"
    return f"{_med(values):,.{digits}f} ({min(values):,.{digits}f}–{max(values):,.{digits}f}, n={len(values)})"


def _opt(values: Sequence[float | None], digits: int = 1) -> str:
    got = [v for v in values if v is not None]
    return _fmt(got, digits) if got else "–"


def _peak(runs: Sequence[Run]) -> tuple[int, int]:
    """(the CLI's own peak RSS, its engine processes' largest), MiB, highest over the runs."""
    own = max((r.parsed.own_rss or 0) for r in runs)
    workers = max((max(r.parsed.worker_rss, default=0)) for r in runs)
    return own, workers


def rows(m: Measured) -> list[str]:
    """The table of one N: one row per kind, with the raw reads first."""
    pts = m.size.patients
    wc = _med(m.raw["wc"])
    out = [
        f"#### {pts:,} patients (`--synthea {m.corpus.n} --seed {m.corpus.seed}`): {m.size.resources:,} resources "
        f"({m.size.resources / pts:,.0f} per patient), {m.size.bytes / 1e6:,.0f} MB ({m.size.bytes / pts / 1e6:.2f} MB "
        f"per patient{f'; gzipped {m.size.gz_bytes / 1e6:,.0f} MB' if m.size.gz_bytes else ''})",
        "",
        "| read | wall s | patients/s (wall) | grouping s | start-up s | evaluating s | patients/s evaluating "
        "| raw read / wall (`wc -l`; Python) | peak RSS MiB: CLI / engine / whole tree |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, label in (("wc", "raw read: `wc -l`"), ("python", "raw read: Python line count")):
        v = m.raw[key]
        out.append(f"| {label} | {_fmt(v, 3)} | {_rate(pts / _med(v))} | | | | | | |")
    if m.raw.get("python-gz"):
        v = m.raw["python-gz"]
        out.append(f"| raw read: Python line count, `.ndjson.gz` | {_fmt(v, 3)} | {_rate(pts / _med(v))} | | | | | | |")
    for kind, runs in m.runs.items():
        walls = [r.wall for r in runs]
        ps = [r.parsed for r in runs]
        own, workers = _peak(runs)
        raw = _med(m.raw["python-gz"]) if kind == "gz" and m.raw.get("python-gz") else _med(m.raw["python"])
        wc_share = f"{wc / _med(walls):.1%}" if kind != "gz" else "–"
        out.append(
            f"| {KINDS[kind][0]} | {_fmt(walls)} | {_rate(pts / _med(walls))} | {_opt([p.grouping for p in ps])} "
            f"| {_opt([p.startup for p in ps])} | {_opt([p.evaluating for p in ps])} | {_opt([p.rate for p in ps], 0)} "
            f"| {wc_share}; {raw / _med(walls):.1%} | {own} / {workers or '–'} / {max(r.tree_rss for r in runs)} |"
        )
    for kind, why in m.failed.items():
        out.append(f"| {KINDS[kind][0]} | failed: {why.replace('|', '/')[:200]} | | | | | | | |")
    left = [r.parsed.left_out for r in m.runs.get("java", [])]
    if left and m.runs["java"][0].parsed.resources:
        total = m.runs["java"][0].parsed.resources or 1
        out += ["", f"The push-down left out {left[0]:,} of {total:,} resources ({left[0] / total:.0%}) at grouping."]
    if "spark" in m.runs and "java" in m.runs:
        s = _med([r.wall for r in m.runs["spark"]]) / _med([r.wall for r in m.runs["java"]])
        line = f"Spark `local[2]` / local path (Java, push-down), wall time: **{s:.2f}×**"
        if "spark-all" in m.runs:
            a = _med([r.wall for r in m.runs["spark-all"]]) / _med([r.wall for r in m.runs["spark"]])
            line += f"; Spark without / with the push-down before the shuffle: {a:.2f}×"
        out += ["", line + "."]
    return out


def _rate(x: float) -> str:
    """Patients per second: a decimal below 10 (small or slow runs), whole numbers above."""
    return f"{x:,.1f}" if x < 10 else f"{x:,.0f}"


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def targets(ms: Sequence[Measured]) -> list[str]:
    """The targets line: each target met or missed, with its figure, at each N."""
    parts: list[str] = []
    for m in ms:
        pts = m.size.patients
        if "java" in m.runs:
            wall = _med([r.wall for r in m.runs["java"]])
            rate, share = pts / wall, _med(m.raw["wc"]) / wall
            ok = _verdict(rate >= TARGET_RATE)
            parts.append(f"{pts:,}: ≥ {TARGET_RATE:.0f} patients/s end to end {ok} ({_rate(rate)}/s)")
            ok = _verdict(share >= TARGET_RAW_SHARE)
            parts.append(f"{pts:,}: ≥ {TARGET_RAW_SHARE:.0%} of the raw read (`wc -l`) {ok} ({share:.1%})")
        if "gz" in m.runs:
            rate = pts / _med([r.wall for r in m.runs["gz"]])
            ok = _verdict(rate >= TARGET_GZ_RATE)
            parts.append(f"{pts:,}: `.ndjson.gz` ≥ {TARGET_GZ_RATE:.0f} patients/s {ok} ({_rate(rate)}/s)")
    with_java = [m for m in ms if "java" in m.runs]
    if len(with_java) >= 2:
        lo, hi = with_java[0], with_java[-1]
        for what, i in (("CLI", 0), ("engine", 1)):
            a, b = _peak(lo.runs["java"])[i], _peak(hi.runs["java"])[i]
            grow = (b - a) / a if a else 0.0
            ok = _verdict(abs(grow) <= TARGET_FLAT)
            span = f"{lo.size.patients:,} → {hi.size.patients:,} patients"
            parts.append(f"peak RSS ({what}) {span} within {TARGET_FLAT:.0%} {ok} ({a} → {b} MiB, {grow:+.0%})")
    return [f"Targets: {'; '.join(parts)}." if parts else "Targets: nothing measured."]


def report(ms: Sequence[Measured], info: dict[str, str], cmd: str, seconds: float, runs: int) -> str:
    """The BENCHMARKS.md block between SYN_BEGIN and SYN_END."""
    lines = [
        SYN_BEGIN,
        "## 9. Synthea records as an EHR's Bulk export sends them (`scripts/bench --synthea`)",
        "",
        f"- Command: `{cmd}` ({seconds / 60:.0f} min, generation included when not cached)",
        f"- Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}; machine: {info['cores']} cores, "
        f"{info['memory']} memory; load average at start {info['load']} (shared machine)",
        "- Corpus: Synthea `org.mitre.synthea:synthea:3.3.0` (Maven Central), reference date 2026-12-01, made by "
        f"`scripts/synth --synthea N --seed S --labs-share {LABS_SHARE} --out DIR`: a confirmed GL Condition added "
        f"to every patient, the labs and drug orders the logic reads to {float(LABS_SHARE):.0%}, untrimmed (every "
        "resource Synthea writes, its Bulk Data layout `<Type>.ndjson`); `--synthea N` counts living patients, "
        "the deceased come on top. The `.ndjson.gz` copy: gzip level 6 of the same files.",
        f"- Commands measured, each in a fresh process, alternating round by round: {_commands()}. `--at {AT}`. "
        f"Java push-down (plain and gzipped) and the raw reads: median (min–max) of the runs shown (n={runs}); "
        "`--read-all`, Node and Spark once each (slow). Wall time is end to end (package build, JVM start, grouping, "
        "evaluation, writing the results); grouping, start-up and evaluating are each CLI's own stderr figures "
        "(for Spark, 'evaluating' is the whole job: reading, the push-down, the shuffle, evaluation, writes). "
        "Peak RSS: the CLI's own line (its Python process; the JVM, for `--engine java`; the driver's Python "
        "for Spark), and its whole process tree (the CLI, its JVM, Spark's JVM and workers): the largest sum of "
        "their RSS, sampled every 0.5 s from /proc.",
        "- Raw read: `wc -l` of the same NDJSON files, and a Python `for line in file` count (of the `.gz` for "
        "the gzipped row): the ceiling of any reader. 'raw read / wall' is the raw read's time over the row's "
        "wall time (the target: ≥ 50 % of `wc -l`).",
        "",
    ]
    for m in ms:
        lines += [*rows(m), ""]
    lines += targets(ms)
    lines.append(SYN_END)
    return "\n".join(lines) + "\n"


def _commands() -> str:
    return "; ".join(f"`{KINDS[k][1]}`" for k in KINDS)


def make_parser() -> argparse.ArgumentParser:
    """`scripts/bench --synthea [--patients N ...] [--seed S] [--work DIR] [--runs R] [--skip ...] [--out FILE]`."""
    p = argparse.ArgumentParser(prog="scripts/bench --synthea", description=__doc__.splitlines()[0])
    p.add_argument(
        "--patients", type=int, nargs="+", default=[1000], metavar="N", help="living patients (default 1000)"
    )
    p.add_argument("--seed", type=int, default=42, help="Synthea's seed (default 42)")
    p.add_argument(
        "--work", type=Path, default=None, metavar="DIR",
        help="cache of the populations: DIR/synthea-N-S/{export,export-gz} (default .run), reused when present",
    )  # fmt: skip
    p.add_argument("--runs", type=int, default=3, help="runs of the raw reads and the Java push-down (default 3)")
    p.add_argument(
        "--skip", default="", metavar="PARTS",
        help=f"comma-separated parts left out: {', '.join(PARTS)} (the Java push-down run is always measured)",
    )  # fmt: skip
    p.add_argument("--timeout", type=float, default=7200, help="seconds per command (default 7200)")
    p.add_argument("--out", type=Path, default=None, help="report file (default BENCHMARKS.md; only its block)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Generate or reuse each population, measure it, write the block after each size (kept if a later one fails)."""
    given = list(sys.argv[1:] if argv is None else argv)
    args = make_parser().parse_args(given)
    skip = {s for s in args.skip.split(",") if s}
    if skip - set(PARTS) or args.runs < 1 or min(args.patients) < 1:
        sys.stderr.write(f"bench --synthea: --skip takes {', '.join(PARTS)}; --runs and --patients need >= 1\n")
        return 2
    root = toolchain.repo_root()
    out = args.out or root / "BENCHMARKS.md"
    work = (args.work or root / ".run").resolve()
    started = time.monotonic()
    info = machine()
    cmd = " ".join(["scripts/bench --synthea", *given])
    done: list[Measured] = []
    for n in args.patients:
        try:
            c = corpus(work, n, args.seed, args.timeout * 4, gz="gz" not in skip)
            done.append(measure(c, args.runs, skip, args.timeout))
        except (subprocess.SubprocessError, OSError) as e:
            # Synthea, gzip or a raw read failed: what is measured so far stays in the block
            sys.stderr.write(f"bench --synthea: N={n}: {e}\n")
            return 1
        BLOCK.write(out, report(done, info, cmd, time.monotonic() - started, args.runs))
        log(f"wrote {out} ({n} done)")
    return 1 if any(m.failed for m in done) else 0


if __name__ == "__main__":
    sys.exit(main())
