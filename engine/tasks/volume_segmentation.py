"""Volume segmentation: a CT / MR volume -> sliding windows -> labels on the source voxel grid -> volumes in mL.

The volume (``read_volume``: a series folder, a list of its files, an enhanced file or NIfTI) is
turned to the bundle's axes by its affine, z-scored, padded to at least one window and cut into
overlapping windows (``VolumePreprocess``); the runtime sees them at most ``MAX_BATCH`` at a time
(engine/model.py); their softmax is blended with a Gaussian importance map, the argmax taken and
turned back onto the source grid. Each label's volume is its voxel count x the voxel volume from
the affine. Golden inputs are compared as label maps: the share of voxels whose label differs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..cautions import ResultWarning
from ..compare import activate
from ..errors import InvalidInputError
from ..intended_use import check_extent
from ..io.volume import read_volume
from ..preprocess import (blend_windows, from_model_axes, pad_to_patch, reorientation, to_model_axes, volume_windows,
                          zscore)
from ..results import VolumeSegmentationResult
from ..volume import VolumeStudy
from .base import Task

MAX_WINDOWS = 512  # windows of one volume held as the runtime's input (40x56x40 float32: ~180 MiB)
MIN_FRACTION = 0.5  # each side at least half the window (the rest would be padding)


@dataclass(frozen=True)
class VolumeOptions:
    """A volume task takes no per-study options."""


def volume_windows_of(voxels: np.ndarray, affine: np.ndarray, spec) -> tuple[np.ndarray, dict]:
    """(N, 1, *patch) float32 windows of a volume and what maps their outputs back (the build's
    data loader, the recipe and the engine share it)."""
    turn = reorientation(affine, spec.orientation)
    turned = to_model_axes(voxels, turn)
    check_volume(turned, spec)
    padded, inner = pad_to_patch(zscore(turned), spec.patch)
    origins = volume_windows(padded.shape, spec)
    d, h, w = spec.patch
    windows = np.empty((len(origins), 1, d, h, w), np.float32)
    for out, (z, y, x) in zip(windows, origins):
        out[0] = padded[z:z + d, y:y + h, x:x + w]
    return windows, {"origins": origins, "padded": padded.shape, "inner": inner, "turn": turn}


def labels_from(probs, meta: dict, spec) -> np.ndarray:
    """uint8 labels (argmax of the blended probabilities) on the source voxel grid."""
    blended = blend_windows(probs, meta["origins"], meta["padded"], spec)
    labels = blended[(slice(None), *meta["inner"])].argmax(0).astype(np.uint8)
    return np.ascontiguousarray(from_model_axes(labels, meta["turn"]))


def check_volume(turned: np.ndarray, spec) -> None:
    """Refuse a volume this model cannot judge: non-finite, constant, far smaller than one window,
    or so large that its windows would not fit the memory bound."""
    if not np.isfinite(turned).all():
        raise InvalidInputError("the volume holds NaN or infinite values", expected="finite voxel values")
    if float(turned.max()) - float(turned.min()) <= 1e-6:
        raise InvalidInputError(f"the volume is constant (every voxel is {float(turned.flat[0]):.3g})",
                                expected="a volume with content", fix="check the rescale tags or the file")
    least = tuple(int(np.ceil(p * MIN_FRACTION)) for p in spec.patch)
    if any(s < m for s, m in zip(turned.shape, least)):
        raise InvalidInputError(f"the volume is {' x '.join(map(str, turned.shape))} voxels in {spec.orientation} axes",
                                expected=f"at least {' x '.join(map(str, least))} (half of this model's window)",
                                fix="give the whole series or crop")
    count = len(volume_windows(tuple(max(s, p) for s, p in zip(turned.shape, spec.patch)), spec))
    if count > MAX_WINDOWS:
        raise InvalidInputError(f"the volume is {' x '.join(map(str, turned.shape))} voxels: {count} windows",
                                expected=f"at most {MAX_WINDOWS} windows of {' x '.join(map(str, spec.patch))}",
                                fix="crop the volume around the structure this model is for")


class VolumeSegmentationTask(Task):
    name = "volume_segmentation"
    study_kind = "volume"
    options_type = VolumeOptions
    result_type = VolumeSegmentationResult
    metrics = ("dice_volume",)
    agreement_measure = "share of voxels whose label changed"
    golden_tolerance = {"fp32": 1e-3, "fp16": 5e-3, "int8": 2e-2}

    def read(self, source, options) -> VolumeStudy:
        return read_volume(source)

    def screen(self, study: VolumeStudy, strict: bool) -> list:
        """The millimetres the volume covers and its voxel size, in the model's axes, against the
        ranges the bundle states (a whole-brain series given to a model of crops is flagged)."""
        perm, _ = reorientation(study.affine, self.spec.orientation)
        return check_extent(self.manifest.intended_for, tuple(study.shape[j] for j in perm),
                            tuple(study.spacing[j] for j in perm), self.spec.orientation, strict=strict)

    def preprocess(self, study: VolumeStudy, options) -> tuple[dict, dict]:
        windows, meta = volume_windows_of(study.voxels, study.affine, self.spec)
        return {self.input_name: windows}, meta | {"voxel_ml": study.voxel_volume_ml, "study": study}

    def postprocess(self, outputs: dict, meta: dict) -> dict:
        logits = outputs[self.manifest.postprocess.score_output]
        if len(logits) == 1:  # one window: its blend is itself, and the argmax of logits is that of the softmax
            mask = np.ascontiguousarray(from_model_axes(logits[0][(slice(None), *meta["inner"])].argmax(0).astype(np.uint8),
                                                        meta["turn"]))
        else:
            probs = (p for i in range(0, len(logits), 4) for p in self.scores({"x": logits[i:i + 4]}, "x"))
            mask = labels_from(probs, meta, self.spec)
        labels = tuple(self.manifest.labels)
        study, voxel_ml = meta["study"], meta["voxel_ml"]
        counts = np.bincount(mask.ravel(), minlength=len(labels) + 1)
        measurements = {f"{k}_volume_ml": round(float(counts[i + 1] * voxel_ml), 4) for i, k in enumerate(labels)}
        measurements["total_volume_ml"] = round(float(counts[1:].sum() * voxel_ml), 4)
        warnings = tuple(ResultWarning("no_measurement", f"no voxel was labelled {k}: its volume is 0 mL")
                         for i, k in enumerate(labels) if counts[i + 1] == 0)
        return {"mask": mask, "labels": labels, "measurements": measurements, "voxel_volume_ml": voxel_ml,
                "spacing_mm": tuple(float(s) for s in study.spacing), "affine": study.affine,
                "slice_uids": study.slice_uids, "volume_kind": study.kind, "windows": len(meta["origins"]),
                "warnings": warnings}

    def scores(self, outputs: dict, name: str | None = None) -> np.ndarray:
        """(N, classes, *patch) float32 softmax over the class axis."""
        logits = outputs[name or self.manifest.postprocess.score_output]
        z = np.moveaxis(np.asarray(logits), 1, -1)
        return np.moveaxis(activate(z, "softmax", self.manifest.postprocess.temperature), -1, 1).astype(np.float32)

    def disagreement(self, reference: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Per golden window, against the source model: the share of voxels whose label differs."""
        changed = np.asarray(reference).argmax(1) != np.asarray(scores).argmax(1)
        return changed.reshape(len(scores), -1).mean(axis=1)
