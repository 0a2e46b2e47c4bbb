"""Read a volume: a DICOM series (a folder or its files), one enhanced multi-frame CT / MR, or NIfTI.

Every header is read and checked (series, size, orientation, spacing, positions, limits) before
any pixel is decoded; geometry and refusals are engine/volume.py's, shared by both DICOM forms.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np

from .. import limits
from ..errors import InvalidInputError
from ..volume import FIX_SERIES, ORIENTATION, POSITION, SPACING, SliceHeader, VolumeStudy, arrange, frozen, numbers
from . import dicom
from .nifti import is_nifti, read_nifti

SKIPPED = ("DICOMDIR",)  # a folder's index file, not a slice (hidden files are skipped too)
SERIES = "(0020,000E) Series Instance UID"
PER_FRAME = "(5200,9230) Per-frame Functional Groups Sequence"
SHARED = "(5200,9229) Shared Functional Groups Sequence"
# enhanced multi-frame: functional group -> (its tag, the attribute read from its item, that attribute's tag)
GROUPS = {
    "position": ("PlanePositionSequence", "(0020,9113) Plane Position Sequence", "ImagePositionPatient", POSITION),
    "orientation": ("PlaneOrientationSequence", "(0020,9116) Plane Orientation Sequence", "ImageOrientationPatient",
                    ORIENTATION),
    "spacing": ("PixelMeasuresSequence", "(0028,9110) Pixel Measures Sequence", "PixelSpacing", SPACING)}
TRANSFORM = ("PixelValueTransformationSequence", "(0028,9145) Pixel Value Transformation Sequence")


def read_volume(source) -> VolumeStudy:
    """Read ``source`` (a folder holding one series, a list of its files, one enhanced multi-frame
    DICOM file, or a ``.nii`` / ``.nii.gz`` file) into a :class:`VolumeStudy`. Files are only read."""
    paths, what = _inputs(source)
    if any(is_nifti(p) for p in paths):
        if len(paths) != 1:
            raise InvalidInputError(f"{what} mixes a NIfTI file with {len(paths) - 1} other file(s)",
                                    expected="one NIfTI file, or the DICOM files of one series",
                                    fix="give the NIfTI file alone")
        return read_nifti(paths[0])
    return _read_dicom(paths, what)


def source_files(source) -> list[str]:
    """The files :func:`read_volume` reads for ``source`` (a folder's, sorted by name; a list's as
    given), checked; a served volume's client sends these (engine/remote.py)."""
    return _inputs(source)[0]


def _inputs(source) -> tuple[list, str]:
    """The files ``source`` names (a folder's regular files, sorted by name), and how to name it."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if not n.startswith(".") and n not in SKIPPED)
            paths = [os.path.join(path, n) for n in names if os.path.isfile(os.path.join(path, n))]
            if not paths:
                raise InvalidInputError(f"the folder {path} holds no files", expected="the files of one series",
                                        fix="give the folder that holds the series' files (not its parent)")
            return _checked(paths, f"the folder {path}"), f"the folder {path}"
        return _checked([path], path), path
    if isinstance(source, (list, tuple)) and source and all(isinstance(p, (str, os.PathLike)) for p in source):
        paths = [os.fspath(p) for p in source]
        return _checked(paths, f"the {len(paths)} files given"), f"the {len(paths)} files given ({paths[0]}, ...)"
    raise InvalidInputError(f"the volume was given as {type(source).__name__} {str(source)[:80]!r}",
                            expected="a folder holding one series, a list of its files, or a .nii / .nii.gz path",
                            fix="pass a path or a list of paths")


def _checked(paths: list, what: str) -> list:
    if len(paths) > limits.MAX_SERIES_FILES:
        raise InvalidInputError(f"{what} holds {len(paths):,} files",
                                expected=f"at most {limits.MAX_SERIES_FILES:,} files in one series (engine/limits.py)",
                                fix="give the files of one series")
    for path in paths:
        if not os.path.isfile(path):
            raise InvalidInputError(f"{path} does not exist or is not a file",
                                    expected="a folder holding one series, its files, or a NIfTI file",
                                    fix="check the path")
    if len(set(map(os.path.realpath, paths))) != len(paths):
        raise InvalidInputError(f"{what} names the same file more than once", expected="each file once",
                                fix="remove the repeated paths")
    return paths


def _read_dicom(paths: list, what: str) -> VolumeStudy:
    sizes = [os.path.getsize(p) for p in paths]
    for path, size in zip(paths, sizes):
        limits.check_file_size(size, path)
    limits.check_volume((len(paths),), sum(sizes), what)
    files = []  # (path, bytes, dataset, FrameShape)
    for path in paths:
        with open(path, "rb") as fh:
            data = fh.read()
        with dicom.parse_errors(path):
            ds = dicom.read_dataset(path, data)
            files.append((path, data, ds, dicom.check_header(ds, path)))
    with dicom.parse_errors(what, "has a malformed header"):
        _one_series(files, what)
    if len(files) == 1 and files[0][3].frames > 1:
        return _read_enhanced(*files[0])
    for path, _, _, shape in files:
        if shape.frames > 1:
            raise InvalidInputError(f"{path} holds {shape.frames} frames ((0028,0008) Number of Frames) among "
                                    f"{len(files) - 1} other file(s)",
                                    expected="single-frame slices, or one enhanced multi-frame file alone",
                                    fix="give the multi-frame file on its own")
    with dicom.parse_errors(what, "has a malformed header"):
        headers = [_classic_header(path, ds, shape) for path, _, ds, shape in files]
    geometry = arrange(headers, what)
    order = geometry.order
    shape = files[0][3]
    limits.check_volume((len(order), shape.rows, shape.columns), sum(sizes), what)
    voxels = np.empty((len(order), shape.rows, shape.columns), np.float32)
    digest = hashlib.sha256()
    for k, i in enumerate(order):
        path, data, ds, _ = files[i]
        digest.update(data)
        with dicom.parse_errors(path):
            dicom.load_pixel_data(ds, data)
            voxels[k] = _modality(ds, dicom.decode_pixels(ds, path, None, shape), path)
    first = files[order[0]][2]
    uids = tuple(str(files[i][2].get("SOPInstanceUID", "")) for i in order)
    source = what.removeprefix("the folder ") if what.startswith("the folder ") else files[order[0]][0]
    return VolumeStudy(frozen(voxels), frozen(geometry.affine), geometry.spacing, source, "dicom", digest.hexdigest(),
                       uids, (), tuple(files[i][0] for i in order), _meta(first))


def _one_series(files: list, what: str) -> None:
    """One (0020,000E) Series Instance UID, one Frame of Reference, each SOP instance once, no tilt."""
    for keyword, name in (("SeriesInstanceUID", SERIES), ("FrameOfReferenceUID", "(0020,0052) Frame of Reference UID")):
        values = {str(ds.get(keyword, "")) for _, _, ds, _ in files}
        if len(values) > 1:
            raise InvalidInputError(f"{what} holds {len(values)} different {name} values",
                                    expected="the files of one series (one study is read as one volume per series)",
                                    fix="give one series at a time: its own folder, or only its files")
    if not str(files[0][2].get("SeriesInstanceUID", "")):
        raise InvalidInputError(f"{files[0][0]} has no {SERIES}", expected="the series it belongs to",
                                fix=FIX_SERIES)
    seen = {}
    for path, _, ds, _ in files:
        uid = str(ds.get("SOPInstanceUID", ""))
        if uid in seen:
            raise InvalidInputError(f"{path} and {seen[uid]} hold the same (0008,0018) SOP Instance UID",
                                    expected="each instance once", fix="remove the copy")
        seen[uid] = path
        tilt = ds.get("GantryDetectorTilt")
        if tilt not in (None, "") and float(numbers(tilt, 1, "(0018,1120) Gantry/Detector Tilt", path)[0]) != 0:
            raise InvalidInputError(f"{path} has (0018,1120) Gantry/Detector Tilt {tilt} degrees",
                                    expected="an untilted acquisition: a tilted gantry is not supported",
                                    fix="reconstruct the series without gantry tilt before analysis")


def _classic_header(path: str, ds, shape) -> SliceHeader:
    return SliceHeader(path, shape.rows, shape.columns,
                       numbers(ds.get("ImagePositionPatient"), 3, POSITION, path),
                       numbers(ds.get("ImageOrientationPatient"), 6, ORIENTATION, path),
                       numbers(ds.get("PixelSpacing"), 2, SPACING, path, positive=True))


def _modality(ds, arr: np.ndarray, path: str) -> np.ndarray:
    """One slice's stored values through its own Modality LUT or rescale (slope and intercept may differ
    from slice to slice)."""
    dicom.check_modality_lut(ds, path)
    if ds.get("ModalityLUTSequence"):
        from pydicom.pixels import apply_modality_lut

        return _finite(apply_modality_lut(arr, ds), path)
    return _linear(arr, ds.get("RescaleSlope"), ds.get("RescaleIntercept"), path)


def _linear(arr: np.ndarray, slope, intercept, where: str) -> np.ndarray:
    """``arr x slope + intercept`` (1 and 0 when absent), refusing a zero or non-finite rescale."""
    slope = 1.0 if slope in (None, "") else numbers(slope, 1, "(0028,1053) Rescale Slope", where)[0]
    intercept = 0.0 if intercept in (None, "") else numbers(intercept, 1, "(0028,1052) Rescale Intercept", where)[0]
    if slope == 0:
        raise InvalidInputError(f"{where} has (0028,1053) Rescale Slope 0", expected="a non-zero slope",
                                fix="correct the tag (1 when values are stored as-is)")
    if slope == 1 and intercept == 0:
        return arr
    with np.errstate(over="ignore", invalid="ignore"):
        return _finite(arr * slope + intercept, where)


def _finite(values: np.ndarray, where: str) -> np.ndarray:
    with np.errstate(over="ignore"):
        values = np.asarray(values, np.float32)
    if not np.isfinite(values).all():
        raise InvalidInputError(f"{where}: the rescaled values are not finite ((0028,1053) Rescale Slope, "
                                "(0028,1052) Rescale Intercept)", expected="finite modality values",
                                fix="correct the rescale tags")
    return values


def _read_enhanced(path: str, data: bytes, ds, shape) -> VolumeStudy:
    """One enhanced multi-frame CT / MR: each frame's geometry and rescale from its functional groups."""
    with dicom.parse_errors(path, "has malformed functional groups"):
        per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
        if len(per_frame) != shape.frames:
            raise InvalidInputError(f"{path} has {len(per_frame)} items in {PER_FRAME} for {shape.frames} frames",
                                    expected="one item per frame ((0028,0008) Number of Frames): an enhanced "
                                             "multi-frame CT or MR",
                                    fix="export the volume as a classic series (one file per slice) or re-export it")
        shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
        headers, rescale = [], []
        for i, item in enumerate(per_frame):
            where = f"{path} frame {i + 1}"
            values = {key: _group(item, shared, key, where) for key in GROUPS}
            headers.append(SliceHeader(where, shape.rows, shape.columns, values["position"], values["orientation"],
                                       values["spacing"]))
            transform = _item(item, TRANSFORM[0]) or _item(shared, TRANSFORM[0])
            rescale.append((transform.get("RescaleSlope"), transform.get("RescaleIntercept")) if transform
                           else (None, None))
    geometry = arrange(headers, path)
    limits.check_volume((shape.frames, shape.rows, shape.columns), len(data), path)
    voxels = np.empty((shape.frames, shape.rows, shape.columns), np.float32)
    with dicom.parse_errors(path):
        dicom.load_pixel_data(ds, data)
        for k, i in enumerate(geometry.order):
            voxels[k] = _linear(dicom.decode_pixels(ds, path, i, shape), *rescale[i], headers[i].where)
    uid = str(ds.get("SOPInstanceUID", ""))
    return VolumeStudy(frozen(voxels), frozen(geometry.affine), geometry.spacing, path, "dicom-enhanced",
                       hashlib.sha256(data).hexdigest(), (uid,) * shape.frames,
                       tuple(i + 1 for i in geometry.order), (path,) * shape.frames, _meta(ds))


def _item(group_item, keyword: str):
    sequence = group_item.get(keyword) if group_item is not None else None
    return sequence[0] if sequence else None


def _group(item, shared, key: str, where: str) -> tuple:
    """A frame's value from its own functional group, else the shared one, else a refusal naming both."""
    keyword, name, attribute, attribute_name = GROUPS[key]
    found = _item(item, keyword) or _item(shared, keyword)
    if found is None or attribute not in found:
        raise InvalidInputError(f"{where} has no {attribute_name} in a {name} ({PER_FRAME} or {SHARED})",
                                expected="the frame's geometry in its functional groups (enhanced CT / MR)",
                                fix="export the volume as a classic series (one file per slice)")
    return numbers(found.get(attribute), 6 if key == "orientation" else 3 if key == "position" else 2,
                   f"{name} > {attribute_name}", where, positive=key == "spacing")


def _meta(ds) -> dict:
    meta = {k: v for k, v in dicom.describe(ds).items() if k != "SOPInstanceUID"}
    frame_of_reference = ds.get("FrameOfReferenceUID")
    return meta | ({"FrameOfReferenceUID": str(frame_of_reference)} if frame_of_reference else {})
