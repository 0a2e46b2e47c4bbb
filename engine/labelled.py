"""Labelled study folders: studies plus ``labels.csv`` (``file,label``) or a CinC ``REFERENCE.csv``.

The one reader of these labels, shared by build-time validation (export/datasets.py) and site
calibration (engine/calibrate.py, which runs in the clinic app without torch).
"""
from __future__ import annotations

import csv
from pathlib import Path

from .errors import ConfigurationError

STUDY_SUFFIXES = (".dcm", ".dicom", ".png", ".jpg", ".jpeg")
CINC_CODES = {"N": "normal", "A": "af", "O": "other", "~": "noisy"}
LABEL_FILES = ("labels.csv", "REFERENCE.csv")


def label_index(value: str, label_names: tuple, where: Path) -> int:
    """A label's index among the model's labels: its name, a CinC code, or the index itself."""
    value = value.strip()
    if value in label_names:
        return label_names.index(value)
    if value in CINC_CODES and CINC_CODES[value] in label_names:
        return label_names.index(CINC_CODES[value])
    if value.isdigit() and int(value) < max(len(label_names), 2):
        return int(value)
    raise ConfigurationError(f"{where}: label {value!r} is not one of the model's labels {list(label_names)}",
                             fix="use the model's label names (or their index) in the CSV")


def label_table(folder: Path, label_names: tuple) -> dict | None:
    """file/record name -> label index from labels.csv or a CinC REFERENCE.csv (None: unlabelled)."""
    for name in LABEL_FILES:
        path = folder / name
        if path.is_file():
            with open(path, newline="") as fh:
                rows = {r[0]: r[1] for r in csv.reader(fh) if len(r) >= 2 and r[0] not in ("file", "record")}
            return {k: label_index(v, label_names, path) for k, v in rows.items()}
    return None


def folder_studies(folder: Path) -> list[Path]:
    """The DICOM / PNG / JPEG files under ``folder`` (recursively), sorted."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in STUDY_SUFFIXES)
    if not files:
        raise ConfigurationError(f"{folder} holds no DICOM, PNG or JPEG files", fix="point to a folder of studies")
    return files


def study_labels(folder: Path, files: list, label_names: tuple) -> dict | None:
    """file -> label index for each of ``files`` (None when the folder has no label file); a file
    without a row is refused, never dropped."""
    rows = label_table(folder, label_names)
    if rows is None:
        return None
    table = {}
    for f in files:
        value = rows.get(f.name, rows.get(Path(f).relative_to(folder).as_posix()))
        if value is None:
            raise ConfigurationError(f"labels for {folder} have none for {f.name}", fix="add a 'file,label' row for it")
        table[f] = value
    return table
