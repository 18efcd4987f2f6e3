"""Find the files m2s installs beside its code (config/, launch/), wherever it was installed.

Three layouts must work: the source tree (editable pip install, tests), a pip install into a
prefix (setup.py ``data_files`` land in ``<prefix>/share/m2s_perception``), and a colcon install
(``install/m2s_perception/share/m2s_perception``, next to ``lib/python3.X/site-packages``).
"""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE_NAME = "m2s_perception"
_PACKAGE_DIR = Path(__file__).resolve().parent
# The packaged demo weights (package data, beside the code): the node's default model and `make demo`'s.
DEMO_CHECKPOINT = _PACKAGE_DIR / "weights" / "demo_student.pt"


def _candidate_roots() -> list[Path]:
    roots = [_PACKAGE_DIR.parent]  # source tree: <repo>/config next to <repo>/m2s_perception
    # Installed: walk up from site-packages to the prefix and look in share/<package>.
    for parent in _PACKAGE_DIR.parents:
        roots.append(parent / "share" / PACKAGE_NAME)
    roots.append(Path(sys.prefix) / "share" / PACKAGE_NAME)
    try:  # a sourced ROS 2 workspace knows best
        from ament_index_python.packages import get_package_share_directory

        roots.insert(1, Path(get_package_share_directory(PACKAGE_NAME)))
    except Exception:  # ament_index not installed, or this package not in the index
        pass
    return roots


def share_file(relative: str) -> Path:
    """Return the installed path of ``relative`` (e.g. ``config/semantic-kitti.yaml``)."""
    tried = []
    for root in _candidate_roots():
        candidate = root / relative
        if candidate.exists():
            return candidate
        tried.append(str(candidate))
    raise FileNotFoundError(f"{relative!r} not found; looked in: {', '.join(tried)}")
