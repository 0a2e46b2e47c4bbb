"""The shared memory that carries studies between tritonserver and its Python-backend stubs.

pytriton names each region ``/dev/shm/pytrtion<server pid>-...``; the backend creates them 0644
whatever the umask (Boost sets the mode; measured with tritonserver 2.51). ``medexport serve``
makes its own regions owner-only, and removes those of killed servers (which could not).
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

from ..bundle_write import process_alive

SHM_DIR = Path("/dev/shm")
SHM_SWEEP_S = 1.0


def shm_regions() -> list[Path]:
    """The shared-memory regions Triton's Python backend made for this server (pytriton names them
    ``pytrtion<this pid>-...``): they carry every request's study between tritonserver and its stubs."""
    return sorted(SHM_DIR.glob(f"pytrtion{os.getpid()}-*"))


def remove_stale_regions() -> list[Path]:
    """Remove this user's regions left by servers that are gone (killed: nothing could clean up),
    so study bytes do not outlive their server; a region whose server still runs is kept."""
    removed = []
    for region in SHM_DIR.glob("pytrtion*-*"):
        pid = region.name[len("pytrtion"):].split("-", 1)[0]
        try:
            if not pid.isdigit() or region.stat().st_uid != os.getuid() or process_alive(int(pid)):
                continue
            region.unlink()
            removed.append(region)
        except FileNotFoundError:
            pass
    return removed


def make_shm_private() -> None:
    """Owner-only study bytes in shared memory: the Python backend creates its regions 0644 whatever
    the umask (Boost sets the mode; measured with tritonserver 2.51)."""
    for region in shm_regions():
        try:
            if region.stat().st_mode & 0o077:
                region.chmod(0o600)
        except FileNotFoundError:  # a region removed meanwhile
            pass


def keep_shm_private(stop: threading.Event) -> None:
    """Once a second while serving: a restarted stub makes a new region."""
    while not stop.wait(SHM_SWEEP_S):
        make_shm_private()
