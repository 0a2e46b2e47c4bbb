"""Facts about the host the clinic app needs before it starts (no Qt, no runtime imports)."""
from __future__ import annotations

import ctypes.util
import os
import sys

# What Qt's xcb platform plugin loads on a Linux desktop (X11), by Debian/Ubuntu package. Without
# them Qt only says "could not load the Qt platform plugin 'xcb'".
QT_XCB_LIBRARIES = {  # what libqxcb.so and libQt6XcbQpa.so (PySide6 6.11) link, by `ldd`
    "xcb-cursor": "libxcb-cursor0", "xcb-icccm": "libxcb-icccm4", "xcb-keysyms": "libxcb-keysyms1",
    "xcb-image": "libxcb-image0", "xcb-util": "libxcb-util1", "xcb-render-util": "libxcb-render-util0",
    "xcb-randr": "libxcb-randr0", "xcb-shape": "libxcb-shape0", "xcb-shm": "libxcb-shm0", "xcb-sync": "libxcb-sync1",
    "xcb-xfixes": "libxcb-xfixes0", "xcb-render": "libxcb-render0", "xcb-xkb": "libxcb-xkb1",
    "xkbcommon": "libxkbcommon0", "xkbcommon-x11": "libxkbcommon-x11-0", "X11-xcb": "libx11-xcb1",
}


def missing_desktop_libraries(platform: str | None = None) -> list[str]:
    """Debian packages missing for the viewer's display on this machine (empty: none, or not X11)."""
    platform = platform if platform is not None else os.environ.get("QT_QPA_PLATFORM", "xcb")
    if not sys.platform.startswith("linux") or not platform.startswith("xcb"):
        return []
    return [package for lib, package in QT_XCB_LIBRARIES.items() if ctypes.util.find_library(lib) is None]


def install_line(packages: list[str]) -> str:
    return "sudo apt-get install -y " + " ".join(packages)


def installed_versions(packages) -> dict:
    """Each distribution's installed version (None: not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in packages:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out
