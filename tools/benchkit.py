"""What every benchmark shares: the machine it ran on, a progress line, a nearest-rank percentile.

A leaf of tools/: tools/bench.py and the benchmarks it runs (bench_cds, bench_synthea, ...) import it, so none of
them imports another's entry point for these.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from guideline.core import toolchain


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (no interpolation: every reported latency was observed)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


def log(msg: str) -> None:
    """One progress line on stderr, with the time."""
    sys.stderr.write(f"bench {time.strftime('%H:%M:%S')}: {msg}\n")
    sys.stderr.flush()


def machine() -> dict[str, str]:
    """The machine a benchmark ran on (cores, memory, CPU, OS, runtimes, load), for a report's header."""

    def first(path: str, key: str) -> str:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return "?"

    mem_kib = first("/proc/meminfo", "MemTotal").split()[0]
    node = subprocess.run([toolchain.node_executable(), "--version"], capture_output=True, text=True, timeout=30)
    java = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
    return {
        "cores": str(os.cpu_count()),
        "memory": f"{int(mem_kib) / 1024 / 1024:.1f} GiB" if mem_kib.isdigit() else "?",
        "cpu": first("/proc/cpuinfo", "model name"),
        "os": platform.platform(),
        "python": platform.python_version(),
        "node": node.stdout.strip(),
        "java": (java.stderr.splitlines() or ["?"])[0],
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
