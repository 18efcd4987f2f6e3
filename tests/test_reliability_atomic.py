"""Atomic writes never delete what a user owns (issue 12 item 1).

Before the fix, ``atomic_path`` removed any directory at the target path: ``m2s-render --out DIR``
or ``kitti2bag --overwrite`` pointed at a folder erased it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from m2s_training.atomic import OverwriteRefused, atomic_path, write_bytes_atomic, write_text_atomic
from m2s_training.bag import open_bag
from m2s_training.bag.kitti2bag import DEFAULT_START_TIME_NS, BagLayout, convert_sequence
from m2s_training.render import main as render_main
from tests.test_bag import write_tiny_sequence


def user_folder(root: Path) -> Path:
    folder = root / "my_thesis"
    (folder / "chapter1").mkdir(parents=True)
    (folder / "chapter1" / "draft.tex").write_text("years of work")
    (folder / "notes.txt").write_text("keep me")
    return folder


def assert_untouched(folder: Path) -> None:
    assert (folder / "chapter1" / "draft.tex").read_text() == "years of work"
    assert (folder / "notes.txt").read_text() == "keep me"


def test_writing_a_file_over_a_user_directory_is_refused_and_the_directory_kept(tmp_path: Path):
    folder = user_folder(tmp_path)
    with pytest.raises(OverwriteRefused, match="is a directory"):
        write_bytes_atomic(folder, b"png bytes")
    assert_untouched(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_thesis"]  # no temporaries left


def test_a_directory_is_replaced_only_when_the_caller_recognises_it(tmp_path: Path):
    folder = user_folder(tmp_path)
    with (
        pytest.raises(OverwriteRefused),
        atomic_path(folder, replace_dir=lambda d: (d / "metadata.yaml").is_file()) as tmp,
    ):
        tmp.mkdir()
    assert_untouched(folder)
    ours = tmp_path / "bag"
    ours.mkdir()
    (ours / "metadata.yaml").write_text("old")
    with atomic_path(ours, replace_dir=lambda d: (d / "metadata.yaml").is_file()) as tmp:
        tmp.mkdir()
        (tmp / "metadata.yaml").write_text("new")
    assert (ours / "metadata.yaml").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag", "my_thesis"]


def test_files_are_still_replaced_atomically(tmp_path: Path):
    target = tmp_path / "metrics.json"
    write_text_atomic(target, "old")
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_m2s_render_out_pointing_at_a_folder_refuses(tmp_path: Path, capsys):
    root = write_tiny_sequence(tmp_path / "kitti")
    folder = user_folder(tmp_path)
    assert render_main(["--data", str(root), "--sequence", "08", "--scan", "0", "--out", str(folder)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert_untouched(folder)


def test_kitti2bag_overwrite_replaces_a_bag_but_never_another_folder(tmp_path: Path):
    root = write_tiny_sequence(tmp_path / "kitti")
    folder = user_folder(tmp_path)
    with pytest.raises(OverwriteRefused, match="not a rosbag2 bag"):
        convert_sequence(root, "08", folder, overwrite=True, progress=False)
    assert_untouched(folder)
    bag = convert_sequence(root, "08", tmp_path / "bag", progress=False)
    first = sorted(p.name for p in bag.iterdir())
    later = BagLayout(start_time_ns=DEFAULT_START_TIME_NS + 10**9)
    convert_sequence(root, "08", bag, layout=later, overwrite=True, progress=False)
    assert sorted(p.name for p in bag.iterdir()) == first
    reader = open_bag(bag)
    assert reader.start_time == later.start_time_ns  # the new bag, not the old one
    reader.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag", "kitti", "my_thesis"]


def test_temporaries_of_killed_writers_are_removed_by_the_next_write(tmp_path: Path):
    """kill -9 during a write leaves `.NAME.<pid>.*`; before, it stayed forever (and a folder walker found it)."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".000005.label.{dead.pid}.k2j3h4"
    stale.mkdir()
    (stale / "000005.label").write_bytes(b"half")
    live = tmp_path / f".000005.label.{os.getpid()}.abcdef"  # a writer still running: keep
    live.mkdir()
    backup = tmp_path / ".000005.label.backup"  # the user's: keep
    backup.mkdir()
    write_bytes_atomic(tmp_path / "000005.label", b"\0" * 8)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["000005.label", live.name, backup.name])
