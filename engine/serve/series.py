"""A study that is several files (a DICOM series) sent to ``medexport serve`` as one request.

The server gets the whole volume, not windows: reading, orientation, normalisation, the sliding
windows and their blending, the volumes in mL and the screening run there exactly as a local
``predict`` runs them, so a served result equals a local one field by field, and a volume's windows
are rows of one runtime pass (several volumes of a dynamic batch share it). The request header's
``files`` lists each file's plain name and size in the series' order; the payload is their bytes
concatenated. The server checks the table against the payload before it writes anything, writes
the files into the request's private upload folder and reads them as one study.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import InvalidInputError
from ..limits import MAX_FILE_BYTES, MAX_SERIES_FILES, MAX_VOLUME_BYTES
from .checks import CLIENT_FIX, MAX_NAME_CHARS, _short, name


def names_for(paths: list) -> list[str]:
    """Plain, unique names for the files (their own; an index in front when two share a name)."""
    names = [Path(p).name for p in paths]
    if len(set(names)) < len(names):
        names = [f"{i:04d}-{n}"[:MAX_NAME_CHARS] for i, n in enumerate(names)]
    return names


def table(value) -> list[tuple[str, int]]:
    """The header's ``files``: 1 to MAX_SERIES_FILES [name, size] pairs, plain unique names,
    sizes of 1 to MAX_FILE_BYTES bytes, MAX_VOLUME_BYTES in all."""
    ok = isinstance(value, list) and 0 < len(value) <= MAX_SERIES_FILES and all(
        isinstance(e, list) and len(e) == 2 and isinstance(e[1], int) and not isinstance(e[1], bool)
        and 0 < e[1] <= MAX_FILE_BYTES for e in value)
    if not ok:
        raise InvalidInputError(f"the series' file table is {_short(value)}",
                                expected=f"1 to {MAX_SERIES_FILES} [name, size] pairs, each size 1 to "
                                         f"{MAX_FILE_BYTES} bytes", fix=CLIENT_FIX)
    files = [(name(n), s) for n, s in value]
    if len({n for n, _ in files}) != len(files):
        raise InvalidInputError("the series names a file twice", expected="unique file names", fix=CLIENT_FIX)
    total = sum(s for _, s in files)
    if total > MAX_VOLUME_BYTES:
        raise InvalidInputError(f"the series is {total:,} bytes",
                                expected=f"at most {MAX_VOLUME_BYTES:,} bytes (engine/limits.py)",
                                fix="send one series, cropped if it is larger")
    return files


def write_files(folder: str, files: list[tuple[str, int]], payload: bytes) -> list[str]:
    """The series' files written into ``folder`` (owner-only, never over an existing file), in order."""
    if sum(s for _, s in files) != len(payload):
        raise InvalidInputError(f"the series' payload is {len(payload):,} bytes; its file table adds up to "
                                f"{sum(s for _, s in files):,}", expected="the files' bytes, concatenated",
                                fix=CLIENT_FIX)
    paths, start = [], 0
    for file_name, size in files:
        path = os.path.join(folder, file_name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(payload[start:start + size])
        start += size
        paths.append(path)
    return paths

