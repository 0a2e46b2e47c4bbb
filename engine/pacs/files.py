"""Files that are on disk before anyone is told so: write, fsync the file, rename, fsync the folder.

A failed write (a full disk) leaves nothing behind: the temporary file is removed and the error raised.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..atomic import fsync_dir

CHUNK = 1 << 20


def _durable(path, write) -> Path:
    """Call ``write(fd)`` on a temporary file beside ``path``, fsync it, rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            write(fd)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def _write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def durable_replace(path, data: bytes) -> Path:
    """Write ``data`` at ``path`` (replacing the same object received again) and return when it is on disk."""
    return _durable(path, lambda fd: _write_all(fd, data))


def durable_copy(source, path) -> Path:
    """Copy the file ``source`` to ``path`` in chunks (never all in memory) and return when it is on disk."""
    def write(fd):
        with open(source, "rb") as src:
            while chunk := src.read(CHUNK):
                _write_all(fd, chunk)

    return _durable(path, write)


def durable_move(source: Path, folder: Path) -> Path:
    """Rename ``source`` into ``folder`` atomically (same filesystem) and make the rename durable."""
    target = Path(folder) / Path(source).name
    os.replace(source, target)
    fsync_dir(Path(folder))
    return target


def remove_tree(folder: Path) -> None:
    """Remove ``folder`` and its files (a delivered result set), durably."""
    shutil.rmtree(folder, ignore_errors=True)
    fsync_dir(Path(folder).parent)


def has_room(folder, nbytes: int, reserve: int = 4 * CHUNK) -> bool:
    """Whether the filesystem of ``folder`` has ``nbytes`` free beyond a small reserve."""
    try:
        return shutil.disk_usage(folder).free >= nbytes + reserve
    except OSError:
        return False
