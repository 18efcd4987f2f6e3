"""Atomic writes: a reader never sees a half-written checkpoint, prediction, bag or PNG."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success it replaces ``final`` in one rename.

    Works for files and for directories (rosbag2 bags are directories). On error the temporary
    is removed and ``final`` is left untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    tmp = tmp_dir / final.name
    try:
        yield tmp
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def remove_stale_temporaries(final: str | Path) -> list[Path]:
    """Remove the temporary directories that :func:`atomic_path` left beside ``final`` when its process
    was killed (SIGKILL skips the cleanup). Call it only where no other process is writing ``final``."""
    final = Path(final)
    removed = []
    for stale in final.parent.glob(f".{final.name}.*"):
        # mkdtemp's suffix is 8 characters; anything else with this prefix is not ours to delete
        if stale.is_dir() and not stale.is_symlink() and len(stale.name) == len(final.name) + 10:
            shutil.rmtree(stale, ignore_errors=True)
            removed.append(stale)
    return removed


def write_bytes_atomic(final: str | Path, data: bytes | memoryview) -> None:
    with atomic_path(final) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_text_atomic(final: str | Path, text: str) -> None:
    write_bytes_atomic(final, text.encode("utf-8"))
