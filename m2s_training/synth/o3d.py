"""Open3D, importable on machines without the system libusb.

open3d's shared library links against ``libusb-1.0.so.0`` (for its RealSense support, unused by
m2s). A fresh Debian/Ubuntu machine may not have it and only root could install it, so the ``synth``
extra ships it as a wheel (``libusb-package``) and this module loads that copy first: once a library
with the soname ``libusb-1.0.so.0`` is loaded, the dynamic linker reuses it for open3d. A system
libusb, when present, is used instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path


def _load_libusb() -> None:
    if ctypes.util.find_library("usb-1.0"):
        return  # the system has one; open3d finds it itself
    try:
        import libusb_package
    except ImportError:
        return  # open3d's own error then names the missing library
    for candidate in sorted(Path(libusb_package.__file__).parent.glob("libusb-1.0*.so*")):
        ctypes.CDLL(str(candidate), mode=ctypes.RTLD_GLOBAL)
        return


_load_libusb()

import open3d  # noqa: E402  (after libusb is loaded)

__all__ = ["open3d"]
