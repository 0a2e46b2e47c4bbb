"""A 3-D study (``VolumeStudy``) and the slice geometry every volume reader shares (numpy only).

The voxel-to-patient ``affine`` maps an array index (i, j, k, 1) to millimetres in DICOM's patient
coordinates (LPS: x to the patient's left, y to the back, z to the head). A DICOM series is held
slices x rows x columns, sorted along the slice normal (row direction x column direction of
(0020,0037) Image Orientation (Patient)); the slice step comes from (0020,0032) Image Position
(Patient), never from (0018,0050) Slice Thickness or (0020,0013) Instance Number.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .errors import InvalidInputError

POSITION = "(0020,0032) Image Position (Patient)"
ORIENTATION = "(0020,0037) Image Orientation (Patient)"
SPACING = "(0028,0030) Pixel Spacing"
SIZE = "(0028,0010) Rows / (0028,0011) Columns"
FIX_SERIES = "re-export the complete series from the PACS (every slice, once, of one acquisition)"

GAP_FACTOR = 1.5  # a step beyond 1.5 x the median step: a slice is missing
STEP_TOLERANCE = 0.01  # any other step may differ from the median by 1 % (+ 0.01 mm of rounding)
DUPLICATE_MM = 0.01  # two slices closer than this along the normal share a position
TILT_TOLERANCE = 0.005  # in-plane drift per mm along the normal (about 0.3 degrees; + 0.01 mm)
UNIT_TOLERANCE = 0.01  # orientation vectors: unit length and orthogonal within this
SAME_ORIENTATION = 1e-3  # direction cosines of two slices of one volume agree within this
SAME_SPACING = 1e-3  # relative


@dataclass(frozen=True)
class VolumeStudy:
    """Voxels (float32, modality values: HU for CT, as stored x rescale for MR) and their geometry."""

    voxels: np.ndarray  # read-only float32, 3-D: (slices, rows, columns) for DICOM, nibabel's axes for NIfTI
    affine: np.ndarray  # read-only (4, 4): array index (i, j, k, 1) -> LPS millimetres
    spacing: tuple  # mm between neighbouring voxels along each array axis
    source: str  # the folder or file given; for a list of files, the first slice's file
    kind: str  # dicom | dicom-enhanced | nifti
    digest: str  # sha256 over the input files' bytes, in slice order (the same for any file order)
    slice_uids: tuple = ()  # DICOM: (0008,0018) SOP Instance UID of each slice along axis 0
    frames: tuple = ()  # enhanced multi-frame: each slice's frame number (1-based) in its file
    files: tuple = ()  # each slice's file (DICOM), or the NIfTI file
    meta: dict = field(default_factory=dict)  # header facts (modality, series / study UIDs, description)

    @property
    def shape(self) -> tuple:
        return self.voxels.shape

    @property
    def sha256(self) -> str:
        return self.digest

    @property
    def voxel_volume_ml(self) -> float:
        """The volume of one voxel in millilitres (|det| of the affine's 3 x 3, mm^3 / 1000)."""
        return abs(float(np.linalg.det(self.affine[:3, :3]))) / 1000.0


@dataclass(frozen=True)
class SliceHeader:
    """What one slice's header says about where it lies (read before any pixel is decoded)."""

    where: str  # a path, or "path frame N"
    rows: int
    columns: int
    position: tuple  # (0020,0032), mm
    orientation: tuple  # (0020,0037): row direction, then column direction
    pixel_spacing: tuple  # (0028,0030): between rows, between columns, mm


@dataclass(frozen=True)
class Geometry:
    order: tuple  # indices of the given slices, sorted along the normal
    affine: np.ndarray
    spacing: tuple  # (slice step, row spacing, column spacing)


def numbers(value, count: int, name: str, where: str, positive: bool = False) -> tuple:
    """``count`` finite floats from a multi-valued tag (positive ones if asked), else InvalidInputError."""
    try:
        items = [value] if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") else value
        values = tuple(float(v) for v in items)
    except (TypeError, ValueError, OverflowError):
        values = ()
    ok = len(values) == count and all(math.isfinite(v) and (v > 0 or not positive) for v in values)
    if not ok:
        kind = "positive" if positive else "finite"
        raise InvalidInputError(f"{where} has {name} {value!r}", expected=f"{count} {kind} numbers",
                                fix=f"correct {name}, or {FIX_SERIES}")
    return values


def arrange(slices: list, what: str) -> Geometry:
    """Sort ``slices`` along their normal and derive the affine, refusing anything that is not one
    regular volume: mixed size, orientation or spacing; a gantry tilt; duplicate positions; a gap."""
    if len(slices) < 2:
        raise InvalidInputError(f"{what} holds {len(slices)} slice(s)", expected="at least 2 slices of one series",
                                fix="give the folder (or every file) of the series")
    first = slices[0]
    _same(slices, lambda s: (s.rows, s.columns), SIZE, lambda a, b: a == b)
    _same(slices, lambda s: s.orientation, ORIENTATION, lambda a, b: np.allclose(a, b, rtol=0, atol=SAME_ORIENTATION))
    _same(slices, lambda s: s.pixel_spacing, SPACING, lambda a, b: np.allclose(a, b, rtol=SAME_SPACING, atol=0))
    row, col = _directions(first)
    normal = np.cross(row, col)
    positions = np.array([s.position for s in slices], dtype=np.float64)
    distance = positions @ normal
    order = np.argsort(distance, kind="stable")
    distance, positions = distance[order], positions[order]
    step = _step(slices, order, distance)
    _check_tilt(slices, order, positions, distance, normal)
    row_spacing, col_spacing = first.pixel_spacing
    affine = np.eye(4)
    affine[:3, 0] = normal * step
    affine[:3, 1] = col * row_spacing  # the row index moves down a column
    affine[:3, 2] = row * col_spacing  # the column index moves along a row
    affine[:3, 3] = positions[0]
    return Geometry(tuple(int(i) for i in order), affine, (step, row_spacing, col_spacing))


def _same(slices, get, name: str, equal) -> None:
    reference = get(slices[0])
    for s in slices[1:]:
        if not equal(get(s), reference):
            raise InvalidInputError(f"{s.where} has {name} {get(s)} but {slices[0].where} has {reference}",
                                    expected=f"one {name} for every slice of a volume",
                                    fix=f"give the slices of one acquisition only; {FIX_SERIES}")


def _directions(s: SliceHeader) -> tuple:
    row, col = np.array(s.orientation[:3]), np.array(s.orientation[3:])
    if (abs(np.linalg.norm(row) - 1) > UNIT_TOLERANCE or abs(np.linalg.norm(col) - 1) > UNIT_TOLERANCE
            or abs(row @ col) > UNIT_TOLERANCE):
        raise InvalidInputError(f"{s.where} has {ORIENTATION} {list(s.orientation)}",
                                expected="two orthogonal unit vectors (row direction, column direction)",
                                fix=f"correct {ORIENTATION}, or {FIX_SERIES}")
    return row, col


def _step(slices, order, distance: np.ndarray) -> float:
    """The regular step along the normal; refuses duplicate positions, a missing slice or an uneven step."""
    steps = np.diff(distance)
    for k in np.flatnonzero(steps < DUPLICATE_MM):
        a, b = slices[order[k]], slices[order[k + 1]]
        raise InvalidInputError(f"{a.where} and {b.where} have the same {POSITION} {list(a.position)} "
                                f"({steps[k]:.3g} mm apart along the slice normal)",
                                expected="one slice per position (duplicate positions: a repeated slice, "
                                         "or several acquisitions or echoes in one series)",
                                fix=f"remove the repeated slices, or give one acquisition; {FIX_SERIES}")
    median = float(np.median(steps))
    for k in np.flatnonzero(steps > GAP_FACTOR * median):
        a, b = slices[order[k]], slices[order[k + 1]]
        missing = max(1, round(steps[k] / median) - 1)
        raise InvalidInputError(f"the series has a gap of {steps[k]:.4g} mm between {a.where} and {b.where} "
                                f"({POSITION}), {steps[k] / median:.2f} x the median step of {median:.4g} mm: "
                                f"about {missing} slice(s) missing",
                                expected=f"no step beyond {GAP_FACTOR} x the median step",
                                fix=f"the series is incomplete; {FIX_SERIES}")
    uneven = np.abs(steps - median) > STEP_TOLERANCE * median + DUPLICATE_MM
    if uneven.any():
        k = int(np.flatnonzero(uneven)[0])
        raise InvalidInputError(f"the slice step varies from {steps.min():.4g} to {steps.max():.4g} mm "
                                f"({POSITION}; e.g. {steps[k]:.4g} mm after {slices[order[k]].where})",
                                expected=f"one regular step (within {STEP_TOLERANCE:.0%}) along the slice normal",
                                fix=f"resample the series to a regular step, or {FIX_SERIES}")
    return median


def _check_tilt(slices, order, positions: np.ndarray, distance: np.ndarray, normal: np.ndarray) -> None:
    """Every position on the line through the first along the normal, else the gantry was tilted."""
    offset = positions - positions[0]
    drift = np.linalg.norm(offset - np.outer(distance - distance[0], normal), axis=1)
    bad = drift > TILT_TOLERANCE * (distance - distance[0]) + DUPLICATE_MM
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        angle = math.degrees(math.atan2(drift[k], distance[k] - distance[0]))
        raise InvalidInputError(f"{slices[order[k]].where}: {POSITION} lies {drift[k]:.3g} mm off the slice "
                                f"normal of {ORIENTATION} (a gantry tilt of about {angle:.1f} degrees, or "
                                "slices of different stacks)",
                                expected="slices stacked along their normal; a tilted gantry is not supported",
                                fix="reconstruct the series without gantry tilt (or resample it to an "
                                    "orthogonal grid) before analysis")


def frozen(arr: np.ndarray) -> np.ndarray:
    arr.flags.writeable = False
    return arr
