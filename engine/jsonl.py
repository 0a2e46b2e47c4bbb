"""The one durable JSON-lines writer: the listener's ``audit.jsonl`` and the viewer's inference log.

A line is appended whole or not at all (one ``os.write`` of the whole line, the file truncated back
on failure, then fsynced), so a full disk never leaves half a line. What could not be written is
counted, and the next line that is written is preceded by an ``audit-gap`` line saying how many
lines of which kind were lost: nothing disappears silently.
"""
from __future__ import annotations

import errno
import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class JsonLines:
    """Append records to ``path``; ``kind`` is the record's key that names what it is (event, action)."""

    def __init__(self, path, kind: str = "event"):
        self.path, self.kind, self.lock = Path(path), kind, threading.Lock()
        self.lost: dict[str, int] = {}  # kind -> lines not written since the last line that was

    def append(self, record: dict) -> None:
        """Write ``record`` as one line; an OSError (full disk) is raised after the loss is counted."""
        data = _encode(record)
        with self.lock:
            try:
                if self.lost:
                    data = _encode({"time": now_iso(), self.kind: "audit-gap", "lines_lost": dict(self.lost)}) + data
                _append_whole(self.path, data)
                self.lost = {}
            except OSError:
                key = str(record.get(self.kind, "?"))
                self.lost[key] = self.lost.get(key, 0) + 1
                raise


def _encode(record: dict) -> bytes:
    return (json.dumps(record, sort_keys=True) + "\n").encode()


def _append_whole(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        size = os.fstat(fd).st_size
        try:
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, "short write")
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)
