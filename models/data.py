"""Locating the project's shared data (read in place, never copied or downloaded)."""
from __future__ import annotations

import os
from pathlib import Path

from medexport.engine.errors import ConfigurationError

REPO = Path(__file__).resolve().parent.parent


def shared_data() -> Path:
    """``$MEDEXPORT_DATA`` or ``../shared/data`` beside the repository."""
    root = Path(os.environ.get("MEDEXPORT_DATA") or REPO.parent / "shared" / "data")
    if not root.is_dir():
        raise ConfigurationError(f"shared data folder {root} does not exist",
                                 fix="set MEDEXPORT_DATA to the folder holding ecg/, images/, segmentation/")
    return root


def pydicom_data() -> Path | None:
    """Folder of the real DICOM files shipped by the ``pydicom-data`` package, if installed."""
    try:
        import data_store
    except ImportError:
        return None
    return Path(data_store.__file__).parent / "data"


def default_data(config, kind: str) -> list[str] | None:
    """A registered model's default calibration/validation data ("calib" / "val"), as paths."""
    specs = config.extra.get(kind)
    return [str(shared_data() / s) for s in specs] if specs else None
