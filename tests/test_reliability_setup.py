"""A fresh machine without root: open3d (``m2s-synth``) imports without the system libusb (issue 12 item 9)."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys

import pytest

PROBE = """
import m2s_training.synth.o3d as o3d
maps = open("/proc/self/maps").read()
print([line.split()[-1] for line in maps.splitlines() if "libusb-1.0" in line][0])
print(o3d.open3d.__version__)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_open3d_imports_with_the_pip_libusb_where_the_system_has_none():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    library, version = done.stdout.split()
    assert version
    if ctypes.util.find_library("usb-1.0") is None:  # as on a fresh machine: the wheel's copy was loaded
        assert "libusb_package" in library, library
