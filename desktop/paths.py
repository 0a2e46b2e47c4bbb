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
    """Where reports are offered first: a folder the user can see (Documents/medexport reports,
    or the home folder's), never the hidden data folder."""
    home = Path.home()
    path = (home / "Documents" if (home / "Documents").is_dir() else home) / "medexport reports"
    path.mkdir(parents=True, exist_ok=True)
    return path


def installed_bundles_dir() -> Path:
    """Where File > Install bundle... puts bundles (one of the folders the viewer searches)."""
    path = data_dir() / "bundles"
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_path() -> Path:
    """The viewer's log of errors nothing else handled (no patient data: messages and tracebacks)."""
    return data_dir() / "viewer.log"
