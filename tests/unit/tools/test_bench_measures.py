"""`scripts/bench --measures`: its BENCHMARKS.md block, spliced in place."""

from __future__ import annotations

from pathlib import Path

from tools import bench_measures as bm


def _measured() -> bm.Measured:
    return bm.Measured("synthetic", Path("x.ndjson"), 10_000, measure=[30.0, 20.0, 25.0], recommend=[10.0, 12.0, 11.0])


def test_the_block_has_medians_and_their_ratio() -> None:
    """Verify that the row shows each command's median and measure / recommend."""
    block = bm.report([_measured()], 3, 600.0)
    assert block.startswith(bm.MEAS_BEGIN) and bm.MEAS_END in block
    assert "| synthetic | 10,000 | 25.0 | 11.0 | 2.27 |" in block


def test_splice_replaces_only_its_own_block_or_appends_it() -> None:
    """Verify that a second run replaces the block and keeps the rest of the document."""
    first = bm.BLOCK.splice("# Benchmarks\n\nother text\n", "BLOCK-1\n")
    assert first == "# Benchmarks\n\nother text\n\nBLOCK-1\n"
    doc = f"head\n{bm.MEAS_BEGIN}\nold\n{bm.MEAS_END}\ntail\n"
    new = f"{bm.MEAS_BEGIN}\nnew\n{bm.MEAS_END}\n"
    assert bm.BLOCK.splice(doc, new) == f"head\n{new}tail\n"
