"""Where the app keeps its own files: the user data folder only (never beside the input)."""
from __future__ import annotations

import os
import sys
from pathlib import Path


def data_dir() -> Path:
    """``$MEDEXPORT_HOME``, else the platform's per-user data folder + /medexport."""
    if os.environ.get("MEDEXPORT_HOME"):
        root = Path(os.environ["MEDEXPORT_HOME"])
    elif sys.platform == "win32":
        root = Path(os.environ.get("APPDATA", Path.home())) / "medexport"
    elif sys.platform == "darwin":
        root = Path.home() / "Library" / "Application Support" / "medexport"
    else:
        root = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "medexport"
    root.mkdir(parents=True, exist_ok=True)
    return root


def reports_dir() -> Path:
    path = data_dir() / "reports"
    path.mkdir(parents=True, exist_ok=True)
    return path


def unique_path(path: Path) -> Path:
    """``path`` if free, else ``name (2).ext``, ``name (3).ext``...: never overwrite."""
    path = Path(path)
    n = 2
    candidate = path
    while candidate.exists():
        candidate = path.with_name(f"{path.stem} ({n}){path.suffix}")
        n += 1
    return candidate


def write_atomic(path: Path, data: bytes) -> Path:
    """Write to a temporary file beside ``path`` and rename it into place (never a half file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path
