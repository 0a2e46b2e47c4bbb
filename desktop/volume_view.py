"""Three orthogonal views of a volume, without Qt: reorientation, planes, pixel aspect, the
crosshair, label colours and label volumes. The conventions, planes and colours are the engine's
(engine/volume_planes.py), so the views and the volume report (engine/volume_report.py) agree.

A volume's array (DICOM: slices x rows x columns; NIfTI: nibabel's axes) is seen along the patient
axes nearest to its own (nibabel's ``io_orientation`` on the LPS affine): ``array[z, y, x]`` with z
to the head, y to the back, x to the patient's left, as numpy views (no copy). An oblique
acquisition is shown as acquired, along its nearest patient axes, without resampling. The planes
are shown as radiologists read them: patient right on the image's left; anterior at the top of
an axial view and on the left of a sagittal view; the head at the top of coronal and sagittal.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medexport.engine.errors import InvalidInputError
# the conventions, planes and label colours the engine's volume report uses too
from medexport.engine.volume_planes import (AXIS, EDGES, FIRST_COLOURS, FLIPPED_ROWS, IN_PLANE, VIEWS,  # noqa: F401
                                            default_window, label_colour, patient_axes, patient_spacing, pixel_mm,
                                            plane)


class Reslicer:
    """The volume's array axes mapped onto the patient's (z, y, x), from its LPS ``affine``."""

    def __init__(self, shape: tuple, affine: np.ndarray, spacing: tuple):
        self.source_shape = tuple(shape)
        self.affine = np.asarray(affine, np.float64)
        self.spacing = patient_spacing(self.affine, spacing)  # mm along (z, y, x)
        self.shape = self.apply(np.empty(self.source_shape, np.bool_)).shape

    def apply(self, arr: np.ndarray) -> np.ndarray:
        """``arr`` (on the volume's grid) as ``[z, y, x]``: a view, no copy."""
        if arr.shape != self.source_shape:
            raise InvalidInputError(f"an array of shape {arr.shape} was given for a volume of shape "
                                    f"{self.source_shape}", expected="a mask on the volume's voxel grid",
                                    fix="give the mask that was made from this volume")
        return patient_axes(arr, self.affine)


def plane_shape(shape: tuple, view: str) -> tuple[int, int]:
    rows, cols = IN_PLANE[view]
    return shape[rows], shape[cols]


@dataclass
class Crosshair:
    """A voxel (z, y, x) that all three views go through; clicks and the wheel move it."""

    shape: tuple
    point: list = None

    def __post_init__(self):
        if self.point is None:
            self.point = [n // 2 for n in self.shape]

    def index(self, view: str) -> int:
        return self.point[AXIS[view]]

    def step(self, view: str, delta: int) -> None:
        axis = AXIS[view]
        self.point[axis] = int(np.clip(self.point[axis] + delta, 0, self.shape[axis] - 1))

    def pick(self, view: str, row: float, col: float) -> None:
        """A click at (row, col) of ``view``'s plane moves the other two views there."""
        rows, cols = IN_PLANE[view]
        r = int(np.clip(np.floor(row), 0, self.shape[rows] - 1))
        self.point[rows] = self.shape[rows] - 1 - r if FLIPPED_ROWS[view] else r
        self.point[cols] = int(np.clip(np.floor(col), 0, self.shape[cols] - 1))

    def in_plane(self, view: str) -> tuple[int, int]:
        """Where the crosshair crosses ``view``'s plane: (row, column)."""
        rows, cols = IN_PLANE[view]
        r = self.point[rows]
        return (self.shape[rows] - 1 - r if FLIPPED_ROWS[view] else r), self.point[cols]


def looks_like_ct(zyx: np.ndarray) -> bool:
    """Whether voxels look like CT in Hounsfield units (for a NIfTI, which states no modality): at
    least 1 % of a sample is air (-1100 to -900 HU). MR and PET values are never that negative."""
    sample = zyx[::2, ::4, ::4]
    return bool(((sample >= -1100) & (sample <= -900)).mean() >= 0.01)


def label_lut(top: int, opacity: float) -> np.ndarray:
    """(top + 1, 4) uint8 RGBA per label value; 0 (background) transparent."""
    lut = np.zeros((top + 1, 4), np.uint8)
    for label in range(1, top + 1):
        lut[label, :3] = label_colour(label)
    lut[1:, 3] = int(round(np.clip(opacity, 0, 1) * 255))
    return lut


def labels_from(voxels: np.ndarray, where: str) -> np.ndarray:
    """A label map read as float voxels, as uint8 / uint16 labels; refused unless whole numbers 0-65535."""
    low, high = float(voxels.min()), float(voxels.max())
    whole = all(np.array_equal(np.rint(s), s) for s in voxels)  # slab by slab: no full-size temporaries
    if low < 0 or high > 65535 or not whole:
        raise InvalidInputError(f"{where} holds values from {low:g} to {high:g}"
                                f"{'' if whole else ', not all whole numbers'}",
                                expected="a label map: whole numbers 0 (background) to 65535",
                                fix="give the label (mask) file, not an image or a probability map")
    return voxels.astype(np.uint8 if high < 256 else np.uint16)


def label_volumes(labels: np.ndarray, voxel_ml: float) -> list[tuple[int, int, float]]:
    """(label, voxels, mL) of each label present (background left out), counted slab by slab."""
    counts = np.zeros(int(labels.max()) + 1, np.int64)
    for slab in labels:
        counts += np.bincount(slab.ravel(), minlength=counts.size)
    return [(label, int(n), n * voxel_ml) for label, n in enumerate(counts) if label and n]


def check_same_grid(volume, other, where: str) -> None:
    """Refuse a label map that is not on ``volume``'s voxel grid (shape and affine within 0.01 mm)."""
    if other.shape != volume.shape or not np.allclose(other.affine, volume.affine, rtol=0, atol=0.01):
        raise InvalidInputError(f"{where} has shape {other.shape} and voxel-to-patient affine "
                                f"{np.round(other.affine[:3], 3).tolist()}",
                                expected=f"the volume's grid: shape {volume.shape}, affine "
                                         f"{np.round(volume.affine[:3], 3).tolist()}",
                                fix="give the label map made from this volume (same voxels, same orientation)")
