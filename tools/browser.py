"""Drives the system Chromium headless (no browser download, no network) to dump DOMs and take screenshots."""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from guideline.core.errors import EngineError, ToolchainError

# Debian's package; scripts/setup installs it when run as root. GUIDELINE_CHROMIUM overrides it.
DEFAULT_CHROMIUM = "/usr/bin/chromium"
# --no-sandbox: setup and CI run as root, where Chromium's sandbox refuses to start. The
# background-networking flags stop Chromium's own calls home, which this machine's closed
# network refuses (https://chromium.googlesource.com/chromium/src/+/main/docs/linux/debugging.md).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)
TIMEOUT_S = 60.0


@dataclass(frozen=True)
class BrowserRun:
    stdout: str
    stderr: str
    seconds: float


def chromium_path() -> Path:
    """The Chromium binary, or a ToolchainError saying how to install it."""
    path = Path(os.environ.get("GUIDELINE_CHROMIUM", DEFAULT_CHROMIUM))
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise ToolchainError(
            f"Chromium not found at {path}: run ./scripts/setup as root (it installs Debian's 'chromium'), "
            "or `apt-get install chromium`, or set GUIDELINE_CHROMIUM to a Chromium binary"
        )
    return path


def run_chromium(args: list[str], *, timeout: float = TIMEOUT_S) -> BrowserRun:
    """Run headless Chromium once with a fresh profile; kill its whole process group on timeout."""
    binary = chromium_path()
    profile = Path(tempfile.mkdtemp(prefix="guideline-chromium-"))
    start = time.monotonic()
    # Its own session, so a timeout can end Chromium's helper processes too (they share the group).
    proc = subprocess.Popen(
        [str(binary), *FLAGS, f"--user-data-dir={profile}", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise EngineError(f"Chromium did not finish within {timeout:.0f} s: {' '.join(args)}") from None
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if proc.returncode != 0:
        tail = "\n".join(err.strip().splitlines()[-5:])
        raise EngineError(f"Chromium exited with {proc.returncode}: {' '.join(args)}", [tail])
    return BrowserRun(out, err, time.monotonic() - start)


def dump_dom(url: str, *, extra: tuple[str, ...] = (), timeout: float = TIMEOUT_S) -> str:
    """The DOM after the page has loaded, serialised (what the browser built, not the file's bytes)."""
    return run_chromium([*extra, "--dump-dom", url], timeout=timeout).stdout


def screenshot(url: str, out: Path, *, width: int = 1280, height: int = 1600, timeout: float = TIMEOUT_S) -> Path:
    """A PNG of the page's first width x height pixels at 100 % zoom."""
    out.parent.mkdir(parents=True, exist_ok=True)
    run_chromium([f"--window-size={width},{height}", f"--screenshot={out.resolve()}", url], timeout=timeout)
    if not out.is_file():
        raise EngineError(f"Chromium reported success but wrote no screenshot to {out}")
    return out


# ---------------------------------------------------------------- PNG text chunks
# The README screenshot records which page it shows (a digest), so a test can tell it is stale
# without comparing pixels, which change with every Chromium build and font version.

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    if not data.startswith(_PNG_MAGIC):
        raise ValueError("not a PNG file")
    out: list[tuple[bytes, bytes]] = []
    pos = len(_PNG_MAGIC)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        out.append((kind, data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return out


def png_text(path: Path) -> dict[str, str]:
    """The tEXt entries (keyword -> text) of a PNG file."""
    entries: dict[str, str] = {}
    for kind, body in _chunks(path.read_bytes()):
        if kind == b"tEXt" and b"\0" in body:
            key, _, value = body.partition(b"\0")
            entries[key.decode("latin-1")] = value.decode("latin-1")
    return entries


def set_png_text(path: Path, key: str, value: str) -> None:
    """Set one tEXt entry of a PNG (replacing any entry with that keyword), just before IEND."""
    chunks = [
        (k, b) for k, b in _chunks(path.read_bytes()) if not (k == b"tEXt" and b.partition(b"\0")[0] == key.encode())
    ]
    text = key.encode("latin-1") + b"\0" + value.encode("latin-1")
    chunks.insert(len(chunks) - 1, (b"tEXt", text))
    out = bytearray(_PNG_MAGIC)
    for kind, body in chunks:
        out += struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    path.write_bytes(bytes(out))
