"""Labelled volumes for calibration, validation and golden inputs, cut into windows exactly as the
engine does (engine/tasks/volume_segmentation.volume_windows_of).

A spec is a ``file,label`` CSV (each row a volume and its label volume, NIfTI or a series folder;
relative paths under the shared data folder, as the hippocampus recipe writes them), or one
volume (a NIfTI file or a series folder; unlabelled). ``groups`` maps each window to its volume;
``extras`` hold each volume's window geometry ("metas"), truth ("masks", or None) and voxel
volume in mL ("voxel_ml").
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from medexport.engine.errors import ConfigurationError
from medexport.engine.io.volume import read_volume
from medexport.engine.tasks.volume_segmentation import volume_windows_of

from .datasets import Dataset, subset


def _listed(path: Path) -> list[tuple[Path, Path | None]]:
    from medexport.models.data import shared_data

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "file" not in rows[0]:
        raise ConfigurationError(f"{path} lists no volumes", expected="a CSV with columns file,label",
                                 fix="write one row per volume: its file (or series folder) and its label volume")
    root = None
    out = []
    for row in rows:
        pair = []
        for key in ("file", "label"):
            value = (row.get(key) or "").strip()
            p = Path(value) if value else None
            if p is not None and not p.is_absolute():
                root = root or shared_data()
                p = root / p
            if p is not None and not p.exists():
                raise ConfigurationError(f"{path}: listed {key} {value} does not exist (looked for {p})",
                                         fix="check the shared data folder ($MEDEXPORT_DATA)")
            pair.append(p)
        out.append(tuple(pair))
    return out


def _truth(label_path: Path | None, study) -> np.ndarray | None:
    if label_path is None:
        return None
    truth = np.asarray(read_volume(str(label_path)).voxels).round().astype(np.uint8)
    if truth.shape != study.shape:
        raise ConfigurationError(f"label volume {label_path} is {truth.shape}", expected=f"{study.shape}, its image's shape")
    return truth


def perturbed(voxels: np.ndarray, truth: np.ndarray | None, perturb, item: str) -> tuple:
    """``perturb`` (robustness.Perturb, 2-D) applied to every slice along axis 0 with one seed per
    volume: voxels scaled to [0, 1] and back, the truth turned with them."""
    lo, hi = float(voxels.min()), float(voxels.max())
    scale = (hi - lo) or 1.0
    out = np.stack([perturb.pixels((s - lo) / scale, item) for s in voxels]) * scale + lo
    if truth is not None:
        truth = np.stack([sum(perturb.mask(t == k, item) * k for k in range(1, int(truth.max()) + 1))
                          for t in truth]).astype(np.uint8) if truth.max() else truth
    return out.astype(np.float32), truth


def volume_dataset(spec, preprocess, limit: int | None = None, perturb=None) -> Dataset:
    """Windows of every listed volume (a seeded subset of ``limit`` volumes); ``perturb``
    (robustness.Perturb) changes each volume slice by slice as read."""
    path = Path(spec)
    pairs = _listed(path) if path.suffix.lower() == ".csv" else [(path, None)]
    pairs = [pairs[i] for i in subset(len(pairs), limit)]
    rows, groups, metas, masks, voxel_ml = [], [], [], [], []
    for k, (image, label) in enumerate(pairs):
        study = read_volume(str(image))
        voxels, truth = study.voxels, _truth(label, study)
        if perturb is not None:
            voxels, truth = perturbed(voxels, truth, perturb, image.name)
        windows, meta = volume_windows_of(voxels, study.affine, preprocess)
        rows.append(windows)
        groups += [k] * len(windows)
        metas.append(meta)
        masks.append(truth)
        voxel_ml.append(study.voxel_volume_ml)
    labelled = all(m is not None for m in masks)
    extras = {"metas": metas, "masks": masks if labelled else None, "voxel_ml": voxel_ml}
    return Dataset(np.concatenate(rows), np.zeros(len(pairs), np.int64) if labelled else None,
                   tuple(p[0].name for p in pairs), np.array(groups), extras)
