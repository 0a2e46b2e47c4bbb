"""Files that are on disk before anyone is told so: write, fsync the file, rename, fsync the folder."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..atomic import fsync_dir


def durable_replace(path, data: bytes) -> Path:
    """Write ``data`` at ``path`` (replacing the same object received again) and return when it is on disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def durable_move(source: Path, folder: Path) -> Path:
    """Rename ``source`` into ``folder`` atomically (same filesystem) and make the rename durable."""
    target = Path(folder) / Path(source).name
    os.replace(source, target)
    fsync_dir(Path(folder))
    return target
