"""Orthogonal planes of a volume as radiologists read them (numpy and nibabel, no Qt): the report's
three views. The same conventions as the viewer (desktop/volume_view.py): the array seen along the
patient axes nearest to its own (nibabel's ``io_orientation`` on the LPS affine) as ``[z, y, x]``
(z to the head, y to the back, x to the patient's left); patient right on the image's left;
anterior at the top of an axial view and on the left of a sagittal view; the head at the top of
coronal and sagittal views. An oblique acquisition is shown along its nearest axes, not resampled.
"""
from __future__ import annotations

import colorsys

import numpy as np

VIEWS = ("axial", "coronal", "sagittal")
AXIS = {"axial": 0, "coronal": 1, "sagittal": 2}  # the (z, y, x) axis a view's slices step along
IN_PLANE = {"axial": (1, 2), "coronal": (0, 2), "sagittal": (0, 1)}  # (rows, columns) as (z, y, x) axes
FLIPPED_ROWS = {"axial": False, "coronal": True, "sagittal": True}  # rows run head to feet
EDGES = {"axial": ("A", "P", "R", "L"), "coronal": ("S", "I", "R", "L"), "sagittal": ("S", "I", "A", "P")}
# label colours: the first labels (hippocampus anterior, posterior) get clearly different colours
FIRST_COLOURS = ((255, 200, 0), (0, 190, 255), (240, 60, 60), (60, 220, 90), (200, 90, 255), (255, 130, 200))


def patient_axes(arr: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``arr`` (on a volume's grid with the LPS ``affine``) as ``[z, y, x]``: a view, no copy."""
    from nibabel.orientations import apply_orientation, io_orientation

    return apply_orientation(arr, io_orientation(np.asarray(affine, np.float64))).transpose(2, 1, 0)


def patient_spacing(affine: np.ndarray, spacing: tuple) -> tuple[float, float, float]:
    """mm between voxels along (z, y, x)."""
    from nibabel.orientations import io_orientation

    xyz = [0.0, 0.0, 0.0]
    for axis, (patient, _) in enumerate(io_orientation(np.asarray(affine, np.float64))):
        xyz[int(patient)] = float(spacing[axis])
    return xyz[2], xyz[1], xyz[0]


def plane(zyx: np.ndarray, view: str, index: int) -> np.ndarray:
    """The 2-D plane of ``view`` at slice ``index`` of ``zyx``, rows and columns as shown."""
    taken = np.take(zyx, index, axis=AXIS[view])
    return taken[::-1] if FLIPPED_ROWS[view] else taken


def pixel_mm(spacing_zyx: tuple, view: str) -> tuple[float, float]:
    """(height, width) of one of the view's pixels in mm: the plane's true aspect."""
    rows, cols = IN_PLANE[view]
    return spacing_zyx[rows], spacing_zyx[cols]


def centroid(labels_zyx: np.ndarray) -> tuple[int, int, int]:
    """The (z, y, x) voxel nearest the centroid of the labelled voxels (the centre when none is)."""
    where = np.nonzero(labels_zyx)
    if not len(where[0]):
        return tuple(n // 2 for n in labels_zyx.shape)
    return tuple(int(round(float(w.mean()))) for w in where)


def default_window(zyx: np.ndarray) -> tuple[float, float]:
    """(level, width) over the 0.5-99.5th percentiles of a sample of the voxels."""
    sample = zyx[::2, ::4, ::4] if min(zyx.shape) > 8 else zyx
    low, high = np.percentile(sample, (0.5, 99.5))
    return float(low + high) / 2, max(float(high - low), 1e-3)


def label_colour(label: int) -> tuple[int, int, int]:
    """The RGB of a label: six distinct colours first, then hues spread by the golden ratio."""
    if 1 <= label <= len(FIRST_COLOURS):
        return FIRST_COLOURS[label - 1]
    r, g, b = colorsys.hsv_to_rgb((label * 0.618034) % 1.0, 0.75, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def blend(grey: np.ndarray, labels: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    """(H, W, 3) uint8: ``grey`` (uint8) with each label painted in its colour at ``opacity``."""
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    for value in np.unique(labels):
        if value:
            inside = labels == value
            rgb[inside] = rgb[inside] * (1 - opacity) + np.array(label_colour(int(value)), np.float32) * opacity
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def windowed(values: np.ndarray, level: float, width: float) -> np.ndarray:
    """Modality values to display greyscale uint8 through a linear window."""
    return np.clip(np.rint((values - (level - width / 2)) / width * 255), 0, 255).astype(np.uint8)
