"""Calibration / validation / golden data, read through the bundle's own preprocessing.

A DATA spec is one of:
- ``file.npz[:split[:count]]``: arrays ``{split}_images`` (N, H, W) uint8 and ``{split}_labels``
  (MedMNIST layout; split defaults to ``val``), or plain ``images`` / ``labels``;
- a folder of DICOM / PNG / JPEG files, labelled by an optional ``labels.csv`` (``file,label``);
- a single study file.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medexport.engine.errors import ConfigurationError, InvalidInputError
from medexport.engine.io.image import read_image
from medexport.engine.preprocess import image_to_tensor

STUDY_SUFFIXES = (".dcm", ".dicom", ".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class Dataset:
    inputs: np.ndarray  # (N, C, H, W) float32, preprocessed
    labels: np.ndarray | None  # (N,) int, or None when unlabelled
    names: tuple  # one per item, for reports (file name or npz index)

    def __len__(self) -> int:
        return len(self.inputs)

    def take(self, n: int) -> "Dataset":
        return Dataset(self.inputs[:n], None if self.labels is None else self.labels[:n], self.names[:n])


def subset(total: int, limit: int | None, seed: int = 0) -> np.ndarray:
    """Indices of a seeded random subset (sorted), so that ``limit`` items represent the whole
    set: the first N of a sorted dataset can be all one class."""
    if limit is None or limit >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, limit, replace=False))


def load_dataset(spec: str, preprocess, *, labels: tuple = (), limit: int | None = None) -> Dataset:
    """Read ``spec`` (see module doc), preprocess every item as the engine will; ``limit`` keeps a
    seeded random subset."""
    path_text, _, rest = str(spec).partition(".npz:")
    if rest or str(spec).endswith(".npz"):
        path = Path(path_text if rest else spec)
        path = path if path.suffix == ".npz" else path.with_name(path.name + ".npz")
        split, _, count = rest.partition(":")
        n = int(count) if count else limit
        return _from_npz(path, split or "val", preprocess, n if limit is None else min(n or limit, limit))
    path = Path(spec)
    if path.is_dir():
        return _from_folder(path, preprocess, labels, limit)
    if path.is_file():
        return _from_files([path], preprocess, None)
    raise ConfigurationError(f"data {spec!r} does not exist",
                             expected="an .npz[:split[:count]], a folder of studies, or a study file")


def _from_npz(path: Path, split: str, preprocess, limit: int | None) -> Dataset:
    if not path.is_file():
        raise ConfigurationError(f"{path} does not exist", fix="check the path of the .npz file")
    data = np.load(path)
    key = f"{split}_images" if f"{split}_images" in data else "images"
    if key not in data:
        raise ConfigurationError(f"{path} has no '{split}_images' or 'images' array (has {sorted(data.files)})",
                                 fix="name the split, e.g. file.npz:train")
    idx = subset(len(data[key]), limit)
    images = data[key][idx]
    label_key = key.replace("images", "labels")
    labels = data[label_key][idx].reshape(len(images), -1)[:, 0].astype(np.int64) if label_key in data else None
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    inputs = np.concatenate([image_to_tensor(img.astype(np.float32) / scale, preprocess)[0] for img in images])
    return Dataset(inputs, labels, tuple(f"{path.name}:{split}[{i}]" for i in idx))


def _from_folder(folder: Path, preprocess, label_names: tuple, limit: int | None) -> Dataset:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in STUDY_SUFFIXES)
    files = [files[i] for i in subset(len(files), limit)]
    if not files:
        raise ConfigurationError(f"{folder} holds no DICOM, PNG or JPEG files", fix="point to a folder of studies")
    table = None
    csv_path = folder / "labels.csv"
    if csv_path.is_file():
        with open(csv_path, newline="") as fh:
            rows = {r[0]: r[1] for r in csv.reader(fh) if len(r) >= 2 and r[0] != "file"}
        table = {}
        for f in files:
            value = rows.get(f.name, rows.get(str(f.relative_to(folder))))
            if value is None:
                raise ConfigurationError(f"{csv_path} has no label for {f.name}", fix="add a 'file,label' row for it")
            table[f] = label_names.index(value) if value in label_names else int(value)
    return _from_files(files, preprocess, table)


def _from_files(files: list, preprocess, table: dict | None) -> Dataset:
    inputs = []
    for f in files:
        try:
            inputs.append(image_to_tensor(read_image(f, frame=0).pixels, preprocess)[0])
        except InvalidInputError as exc:
            raise ConfigurationError(f"dataset item {f} cannot be used: {exc}", fix="remove it from the data folder") from None
    labels = None if table is None else np.array([table[f] for f in files], np.int64)
    return Dataset(np.concatenate(inputs), labels, tuple(Path(f).name for f in files))


def load_many(specs, preprocess, limit_each: int | None = None) -> Dataset:
    """Concatenate several specs (e.g. the default golden set); labels dropped."""
    parts = [load_dataset(s, preprocess, limit=limit_each) for s in specs]
    return Dataset(np.concatenate([p.inputs for p in parts]), None, tuple(n for p in parts for n in p.names))
