"""Atomic writes: a reader never sees a half-written checkpoint, prediction, bag or PNG.

A writer killed with SIGKILL leaves a hidden ``.NAME.<pid>.*`` temporary; the next write of NAME
removes it once that process is gone. And writes never delete what a user owns: a directory at
the target path is replaced only when the caller recognises it as its own kind of output
(``replace_dir``), e.g. a rosbag2 bag that ``kitti2bag --overwrite`` may replace; any other
directory is refused with ``OverwriteRefused``.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


class OverwriteRefused(ValueError):
    """The target is a directory this tool does not own; the message names it and what to do."""


@contextmanager
def atomic_path(final: str | Path, replace_dir: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success it replaces ``final`` in one rename.

    Works for files and for directories (rosbag2 bags are directories). On error the temporary
    is removed and ``final`` is left untouched. An existing directory at ``final`` is replaced only
    when ``replace_dir(final)`` is true; it is moved into our temporary folder first and deleted
    from there, so a crash in between never leaves ``final`` missing.
    """
    final = Path(final)
    _check_replaceable(final, replace_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(final)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", dir=final.parent))
    tmp = tmp_dir / final.name
    try:
        yield tmp
        if final.is_dir() and not final.is_symlink():
            _check_replaceable(final, replace_dir)  # it may have appeared meanwhile
            old = tmp_dir / f"{final.name}.old"
            os.replace(final, old)
            os.replace(tmp, final)
        else:
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)  # only ever our own temporary folder


def _remove_stale_temporaries(final: Path) -> None:
    """Remove ``.NAME.<pid>.*`` temporaries of ``final`` left by writers that were killed (kill -9).

    Only folders of exactly that form whose process no longer exists: a live writer's temporary
    and anything else named alike are kept. (A tool that walks the folder, like the official
    SemanticKITTI evaluator, would otherwise find the killed run's files inside them.)
    """
    prefix = f".{final.name}."
    for candidate in final.parent.glob(glob.escape(prefix) + "*"):
        pid = candidate.name[len(prefix) :].partition(".")[0]
        if candidate.is_dir() and not candidate.is_symlink() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(candidate, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _check_replaceable(final: Path, replace_dir: Callable[[Path], bool] | None) -> None:
    if not final.is_dir() or final.is_symlink():
        return
    if replace_dir is None:
        raise OverwriteRefused(f"{final} is a directory; refusing to replace it with a file (give a file path)")
    if not replace_dir(final):
        raise OverwriteRefused(
            f"{final} is a directory that this tool did not write; refusing to replace it "
            "(remove it yourself or choose another path)"
        )


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
