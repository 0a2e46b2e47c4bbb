"""Labelled study folders: studies plus ``labels.csv`` (``file,label``), a CinC ``REFERENCE.csv``,
or one sub-folder per label (``NORMAL/``, ``PNEUMONIA/``: the Kermany layout).

The one reader of these labels, shared by build-time validation (export/datasets.py) and site
calibration (engine/calibrate.py, which runs in the clinic app without torch).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigurationError

STUDY_SUFFIXES = (".dcm", ".dicom", ".png", ".jpg", ".jpeg")
CINC_CODES = {"N": "normal", "A": "af", "O": "other", "~": "noisy"}
LABEL_FILES = ("labels.csv", "REFERENCE.csv")
FIRST = 5  # rows named in a message


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


def read_label_file(path: Path, label_names: tuple) -> dict:
    """``file`` -> label index of a ``file,label`` CSV (UTF-8, with or without the byte-order mark
    spreadsheets write). A file listed twice with different labels is refused, naming both rows."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = [(n, r) for n, r in enumerate(csv.reader(fh), 1) if len(r) >= 2 and r[0] not in ("file", "record")]
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})",
                                 fix="save it as 'CSV UTF-8' (comma separated)") from None
    table, seen = {}, {}
    for line, (name, value) in ((n, r[:2]) for n, r in rows):
        index = label_index(value, label_names, path)
        if name in table and table[name] != index:
            first_line, first_value = seen[name]
            raise ConfigurationError(f"{path} lists {name} twice with different labels: row {first_line} "
                                     f"'{name},{first_value}' and row {line} '{name},{value}'",
                                     expected="one label per study", fix="keep the right row and delete the other")
        table[name] = index
        seen.setdefault(name, (line, value))
    return table


def label_table(folder: Path, label_names: tuple) -> dict | None:
    """file/record name -> label index from labels.csv or a CinC REFERENCE.csv (None: no label file)."""
    path = label_file(folder)
    return None if path is None else read_label_file(path, label_names)


def label_file(folder: Path) -> Path | None:
    return next((folder / n for n in LABEL_FILES if (folder / n).is_file()), None)


def folder_studies(folder: Path) -> list[Path]:
    """The DICOM / PNG / JPEG files under ``folder`` (recursively), sorted."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in STUDY_SUFFIXES)
    if not files:
        raise ConfigurationError(f"{folder} holds no DICOM, PNG or JPEG files", fix="point to a folder of studies")
    return files


@dataclass(frozen=True)
class StudyLabels:
    """The label of each study of a folder and where the labels came from."""

    table: dict  # study path -> label index
    source: Path  # the label file, or the folder itself when its class sub-folders are the labels
    unmatched: tuple = ()  # label-file rows naming no study in the folder (left out)

    def notes(self) -> list[str]:
        if not self.unmatched:
            return []
        return [f"{len(self.unmatched)} row(s) of {self.source} name no study in the folder and are left out "
                f"(first: {', '.join(self.unmatched[:FIRST])})"]


def study_labels(folder: Path, files: list, label_names: tuple) -> StudyLabels | None:
    """Labels of ``folder``'s studies ``files`` (all of them: ``folder_studies``) from its label file,
    else from class sub-folders; None when it has neither. A study without a row is refused, never
    dropped; rows without a study are listed, and refused when they are most rows (a wrong folder)."""
    path = label_file(folder)
    if path is None:
        return _subfolder_labels(folder, files, label_names)
    rows = read_label_file(path, label_names)
    table, used = {}, set()
    for f in files:
        rel = Path(f).relative_to(folder).as_posix()
        key = rel if rel in rows else f.name
        if key not in rows:
            raise ConfigurationError(f"{path} has no row for {rel}", fix="add a 'file,label' row for it")
        table[f] = rows[key]
        used.add(key)
    unmatched = tuple(k for k in rows if k not in used)
    if len(unmatched) * 2 > len(rows):
        raise ConfigurationError(f"{len(unmatched)} of the {len(rows)} rows of {path} name no study in {folder} "
                                 f"(first: {', '.join(unmatched[:FIRST])}): the labels seem written for another folder",
                                 expected="a 'file' column naming the folder's studies (file name or path relative "
                                          "to the folder)",
                                 fix="point to the folder these labels describe, or correct the file column")
    return StudyLabels(table, path, unmatched)


def _subfolder_labels(folder: Path, files: list, label_names: tuple) -> StudyLabels | None:
    """Labels from the first sub-folder of each study, matched to the model's labels ignoring case
    (None when no sub-folder is named after a label: an unlabelled folder)."""
    lower = {name.lower(): i for i, name in enumerate(label_names)}
    parts = {f: Path(f).relative_to(folder).parts for f in files}
    names = sorted({p[0] for p in parts.values() if len(p) > 1})
    if not any(n.lower() in lower for n in names):
        return None
    unknown = [n for n in names if n.lower() not in lower]
    if unknown:
        raise ConfigurationError(f"{folder} has class sub-folder(s) {unknown} that are not the model's labels",
                                 expected=f"one sub-folder per label, named {list(label_names)} (any case)",
                                 fix="rename or move those sub-folders, or write labels.csv (file,label)")
    loose = [p[0] for p in parts.values() if len(p) == 1]
    if loose:
        raise ConfigurationError(f"{len(loose)} studies lie directly in {folder}, outside its class sub-folders "
                                 f"(first: {', '.join(loose[:FIRST])})",
                                 fix=f"move each into its label's sub-folder ({', '.join(label_names)})")
    return StudyLabels({f: lower[p[0].lower()] for f, p in parts.items()}, folder)
