"""What every benchmark shares: the machine it ran on, a progress line, a nearest-rank percentile, and its block of
BENCHMARKS.md (between two HTML-comment markers, replaced on its own so the other benchmarks' figures stay).

A leaf of tools/: tools/bench.py and the benchmarks it runs (bench_cds, bench_synthea, ...) import it, so none of
them imports another's entry point for these.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from guideline.core import toolchain


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (no interpolation: every reported latency was observed)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


def log(msg: str, who: str = "bench") -> None:
    """One progress line on stderr, with the time; `who` names the benchmark ("bench --synthea")."""
    sys.stderr.write(f"{who} {time.strftime('%H:%M:%S')}: {msg}\n")
    sys.stderr.flush()


@dataclass(frozen=True)
class Block:
    """One benchmark's block of BENCHMARKS.md: the text from `begin` to `end` (two HTML comments), markers included."""

    begin: str
    end: str

    def splice(self, document: str, block: str) -> str:
        """`document` with this block replaced by `block` (appended when it has none); the rest kept."""
        if self.begin in document and self.end in document:
            head, rest = document.split(self.begin, 1)
            return head + block.rstrip("\n") + rest.split(self.end, 1)[1]
        return document.rstrip("\n") + "\n\n" + block

    def take(self, document: str) -> tuple[str, str]:
        """(`document` without this block, the block with a trailing newline, or "" when absent)."""
        if self.begin in document and self.end in document:
            head, rest = document.split(self.begin, 1)
            body, tail = rest.split(self.end, 1)
            return head + tail, self.begin + body + self.end + "\n"
        return document, ""

    def write(self, path: Path, block: str) -> None:
        """Replace this block in the file at `path` (created with a title when absent): temp file, then rename."""
        text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(self.splice(text, block), encoding="utf-8")
        os.replace(tmp, path)


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
