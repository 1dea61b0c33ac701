"""Verify `scripts/bench --synthea`'s bookkeeping: reading the CLIs' stderr figures and replacing only its own block
of BENCHMARKS.md (no benchmark runs here)."""

from __future__ import annotations

import os
from pathlib import Path

from tools import bench_synthea
from tools.bench_synthea import SYN_BEGIN, SYN_END, Corpus, Measured, Parsed, Run, Size, parse_stderr

RECOMMEND_STDERR = """\
population: Bulk Data export of 31 file(s), 1,523,400 resources grouped by patient in 41.7 s (1,402,113 no retrieve \
can return left out)
population: 1,105 records from /x/export: 1,105 evaluated, 0 skipped; 12.5 s evaluating (88 patients/s, 2 workers) \
after 30.2 s start-up
memory: peak RSS 91 MiB (this process), 612 MiB (workers)
fired: GLR4Diet 900
"""
NODE_STDERR = """\
population: Bulk Data export of 6 file(s), 8,788 resources grouped by patient in 9.5 s
population: 47 records from s: 47 evaluated, 0 skipped; 14.9 s evaluating (3 patients/s, 2 workers) after 7.4 s \
start-up
memory: peak RSS 87 MiB (this process), 301/298 MiB (workers)
"""
SPARK_STDERR = """\
population: 1,105 records from /x/export: 1,100 evaluated, 5 skipped; 80.0 s in Spark local[2] (14 patients/s, \
2 partitions) after 9.0 s start-up; results in /x/out
memory: peak RSS 140 MiB (driver's Python)
"""


def test_parse_recommend_stderr() -> None:
    """Verify that grouping, left-out count, start-up, evaluating, rate and both peak RSS figures are read."""
    p = parse_stderr(RECOMMEND_STDERR)
    assert (p.resources, p.grouping, p.left_out) == (1_523_400, 41.7, 1_402_113)
    assert (p.records, p.evaluated, p.evaluating, p.rate, p.startup) == (1105, 1105, 12.5, 88.0, 30.2)
    assert (p.own_rss, p.worker_rss) == (91, [612])


def test_parse_read_all_and_node_workers() -> None:
    """Verify that a run without the push-down note (--read-all) leaves 0 out, and that each worker's RSS is kept."""
    p = parse_stderr(NODE_STDERR)
    assert (p.resources, p.grouping, p.left_out) == (8788, 9.5, 0)
    assert p.worker_rss == [301, 298] and p.rate == 3.0


def test_parse_spark_stderr() -> None:
    """Verify that Spark's summary (no grouping line, the driver's RSS only) is read."""
    p = parse_stderr(SPARK_STDERR)
    assert p.grouping is None and p.resources is None
    assert (p.evaluated, p.evaluating, p.rate, p.startup) == (1100, 80.0, 14.0, 9.0)
    assert (p.own_rss, p.worker_rss) == (140, [])


def test_parse_missing_lines() -> None:
    """Verify that an error output yields no rate (run_cli reports it as a failure)."""
    assert parse_stderr("error: no such folder\n") == Parsed()


def _measured(n: int, patients: int, wall: float, rss: int) -> Measured:
    c = Corpus(n, 42, Path(f"/w/synthea-{n}-42"), "scripts/synth ...")
    m = Measured(c, Size(patients, patients * 1500, patients * 2_800_000, patients * 300_000))
    m.raw = {"wc": [1.0, 1.2, 0.9], "python": [3.0], "python-gz": [6.0]}
    m.runs["java"] = [Run(wall, parse_stderr(RECOMMEND_STDERR.replace("612", str(rss))), rss + 10)]
    m.runs["gz"] = [Run(wall * 2, parse_stderr(RECOMMEND_STDERR), 600)]
    m.runs["spark"] = [Run(wall * 3, parse_stderr(SPARK_STDERR), 900)]
    return m


def test_report_rows_and_targets() -> None:
    """Verify the block's table and its targets line: rates from wall time, memory growth between sizes."""
    small, large = _measured(1000, 1105, 5.0, 600), _measured(10000, 11050, 40.0, 640)
    block = bench_synthea.report([small, large], {"cores": "2", "memory": "23.5 GiB", "load": "1"}, "c", 60, 3)
    assert block.startswith(SYN_BEGIN) and block.rstrip().endswith(SYN_END)
    assert "| Java, push-down (default) | 5.0 | 221 |" in block
    assert "Spark `local[2]` / local path (Java, push-down), wall time: **3.00×**" in block
    targets = block.splitlines()[-2]
    assert "1,105: ≥ 200 patients/s end to end met (221/s)" in targets
    assert "1,105: ≥ 50% of the raw read (`wc -l`) **missed** (20.0%)" in targets
    assert "11,050: ≥ 200 patients/s end to end met (276/s)" in targets
    assert "peak RSS (engine) 1,105 → 11,050 patients within 10% met (600 → 640 MiB, +7%)" in targets


def test_block_replaced_in_place_rest_kept(tmp_path: Path) -> None:
    """Verify that writing the block replaces only the old Synthea block, keeping what is before and after it, and
    appends it to a document without one."""
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\n## 1. Local\n\nfigures\n", encoding="utf-8")
    bench_synthea.BLOCK.write(path, f"{SYN_BEGIN}\nold\n{SYN_END}\n")
    path.write_text(path.read_text(encoding="utf-8") + "\n<!-- cds-load:begin -->\ncds\n", encoding="utf-8")
    bench_synthea.BLOCK.write(path, f"{SYN_BEGIN}\nnew\n{SYN_END}\n")
    text = path.read_text(encoding="utf-8")
    block = f"{SYN_BEGIN}\nnew\n{SYN_END}\n"
    assert text == f"# Benchmarks\n\n## 1. Local\n\nfigures\n\n{block}\n<!-- cds-load:begin -->\ncds\n"
    rest, block = bench_synthea.BLOCK.take(text)
    assert block == f"{SYN_BEGIN}\nnew\n{SYN_END}\n" and SYN_BEGIN not in rest and "cds" in rest and "figures" in rest
    assert bench_synthea.BLOCK.take("# B\n") == ("# B\n", "")


def test_session_rss_counts_this_session() -> None:
    """Verify that the /proc scan finds this test's own session (the run's tree measure reads the CLI's session)."""
    assert bench_synthea.session_rss(os.getsid(0)) > 0
    assert bench_synthea.session_rss(-1) == 0
