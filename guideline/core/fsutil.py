"""Atomic output folders: everything is written beside the target, then one rename swaps it in."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from guideline.core.errors import UsageError


def write_tree(out_dir: Path, files: Mapping[str, bytes]) -> list[Path]:
    """Replace `out_dir` with exactly `files` (relative path -> bytes); never leaves it half-written.

    An interruption at any point leaves either the old folder or the new one, and no temp folder.
    """
    out_dir = out_dir.resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        for rel, data in files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        os.chmod(tmp, 0o755)  # noqa: S103 - mkdtemp makes 0700; build outputs are ordinary, readable files
        old = None
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out_dir / rel for rel in files]


def check_out_dir(out_dir: Path, marker: str, what: str) -> None:
    """Refuse an output folder that writing would wrongly replace: raises UsageError naming it.

    Writing swaps in a whole new folder (fsutil.write_tree), so `out_dir` must be new, empty or an
    earlier output (one holding `marker`): an existing file, or a folder of other things (`--out .`,
    a home folder), would be deleted. `what` names the output for the message ("the build").
    """
    hint = f"give a new or empty folder, or one holding an earlier {what}"
    if out_dir.is_dir():
        try:
            names = {p.name for p in out_dir.iterdir()}
        except OSError as e:
            raise UsageError(f"{out_dir}: cannot read this output folder ({e.strerror or e}); {hint}") from None
        if names and marker not in names:
            raise UsageError(
                f"{out_dir}: this folder holds other files (no {marker} from an earlier {what}) and writing "
                f"replaces the whole folder; {hint}"
            )
        return
    if out_dir.exists() or out_dir.is_symlink():
        raise UsageError(f"{out_dir}: not a folder (an existing file); --out takes a folder: {hint}")
    # A new folder: its nearest existing ancestor must be a folder we may write in.
    parent = out_dir.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{out_dir}: {parent} is a file, not a folder; choose another --out folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{out_dir}: cannot create it ({parent} is not writable); choose another --out folder")


def replace_dir(tmpdir: Path, out: Path) -> None:
    """Put the finished folder `tmpdir` in place of `out` (a folder or a file, replaced), by rename.

    For test-data folders (tools/synth, tools/synthea): unlike `write_tree`, the old `out` is removed first.
    """
    os.chmod(tmpdir, 0o755)  # noqa: S103 - mkdtemp makes 0700; this is ordinary data
    if out.is_dir():
        shutil.rmtree(out)
    elif out.exists():
        out.unlink()
    os.replace(tmpdir, out)
