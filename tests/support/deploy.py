"""Test helper: how the suite's servers store their data (GUIDELINE_TEST_DB), and a run of ports for a node set."""

from __future__ import annotations

import os
import socket

from tests.support.netutil import free_port


def db_args() -> list[str]:
    """scripts/server start options for the database under test: `--db postgres` when GUIDELINE_TEST_DB=postgres."""
    db = os.environ.get("GUIDELINE_TEST_DB", "h2")
    if db not in ("h2", "postgres"):
        raise ValueError(f"GUIDELINE_TEST_DB must be h2 or postgres, got {db!r}")
    return ["--db", "postgres"] if db == "postgres" else []


def free_port_run(n: int) -> int:
    """A port P with P..P+n all free now (a proxy on P, nodes on P+1..P+n); GUIDELINE_TEST_NODES_PORT if set."""
    fixed = os.environ.get("GUIDELINE_TEST_NODES_PORT", "")
    if fixed:
        return int(fixed)
    for _ in range(50):
        p = free_port()
        if p + n > 65535:
            continue
        ok = True
        for q in range(p + 1, p + n + 1):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", q))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok:
            return p
    raise RuntimeError(f"no run of {n + 1} free ports found")
