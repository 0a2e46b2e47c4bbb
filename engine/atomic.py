"""Publish a new file without ever overwriting one or leaving half a file: the one way outputs are written.

The content goes to a unique temporary file in the target folder (``mkstemp``), is flushed to
disk, then appears under the first free name, ``name.ext``, ``name (2).ext``, ... The name is
claimed by the filesystem itself (a hard link, which fails when the name exists), so two
writers, in one process or several, can never pick the same name or replace each other's file.
"""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Union

Content = Union[bytes, Callable[[Path], None]]  # the bytes, or a writer given the temporary path

MAX_COPIES = 10_000
# link() is refused by some filesystems (FAT, exFAT, some network shares): claim the name with
# O_CREAT | O_EXCL instead, then move the finished file onto the claimed (empty) name
_NO_LINK = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK, errno.EXDEV}


def candidates(path: Path) -> Iterator[Path]:
    """``path``, then ``stem (2)suffix``, ``stem (3)suffix``, ..."""
    yield path
    for n in range(2, MAX_COPIES + 1):
        yield path.with_name(f"{path.stem} ({n}){path.suffix}")


def write_new(path, content: Content) -> Path:
    """Write ``content`` as a new file at ``path`` (or the first free ``stem (n)suffix`` beside it).

    Returns the path written. The file is complete and on disk when it appears; an existing
    file is never replaced.
    """
    return _write(Path(path), content, _publish)


def write_replacing(path, content: Content) -> Path:
    """Write ``content`` at ``path``, replacing a file there in one step (a reader sees the old
    file or the new one, never half of either). Only for files the user asked to overwrite."""
    return _write(Path(path), content, lambda tmp, target: (os.replace(tmp, target), target)[1])


def _write(path: Path, content: Content, publish) -> Path:
    """The content in a temporary file beside ``path``, on disk, then ``publish(tmp, path)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        if callable(content):
            os.close(fd)
            fd = -1
            content(tmp)
            fd = os.open(tmp, os.O_RDWR)
        else:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view):]
        os.fsync(fd)
        if os.name == "posix":
            os.fchmod(fd, 0o644)  # mkstemp makes 0600; outputs get the usual permissions
        os.close(fd)
        fd = -1
        written = publish(tmp, path)
    finally:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return written


def _publish(tmp: Path, path: Path) -> Path:
    for candidate in candidates(path):
        try:
            os.link(tmp, candidate)
            return candidate
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
        try:  # no hard links here: claim the name exclusively, then move the finished file onto it
            os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            continue
        os.replace(tmp, candidate)
        return candidate
    raise FileExistsError(f"{path} and {MAX_COPIES - 1} numbered copies of it exist already; "
                          "choose another folder or clear the old outputs")


def fsync_dir(folder: Path) -> None:
    """Make the new directory entry durable too (POSIX; Windows has no directory handles to sync)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
