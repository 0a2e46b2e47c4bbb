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


def log_path() -> Path:
    """The viewer's log of errors nothing else handled (no patient data: messages and tracebacks)."""
    return data_dir() / "viewer.log"
