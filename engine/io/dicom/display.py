"""DICOM pixel data to display-space greyscale, the way a viewer shows it.

Order (PS3.3 C.11): stored values -> Modality LUT (rescale slope/intercept or LUT) ->
VOI (window or VOI LUT) -> MONOCHROME1 inverted, so that 1.0 is always white.
Every tag that drives the chain is checked first (finite, in range, consistent).
"""
from __future__ import annotations

import math

import numpy as np

from ...errors import InvalidInputError
from .header import FIX, greyscale_photometric


def to_display(ds, arr: np.ndarray, path: str) -> tuple[np.ndarray, dict]:
    """Apply Modality LUT, VOI and MONOCHROME1 inversion; return [0, 1] float32 and how.

    For 8/16-bit stored values the whole chain is one lookup table indexed by the stored
    value (one pass over the pixels); wider data goes through the float path.
    """
    photometric = greyscale_photometric(ds, path)
    if arr.size == 0:
        raise InvalidInputError(f"{path}: the pixel data is empty", expected="at least one pixel", fix=FIX)
    if arr.dtype in (np.uint8, np.uint16, np.int8, np.int16):
        info = np.iinfo(arr.dtype)
        stored = np.arange(info.min, info.max + 1, dtype=np.int32)
        extent = (int(arr.min()), int(arr.max()))
        curve, how = display_curve(ds, stored, path, extent)
        index = arr if info.min == 0 else arr.view(np.uint16 if info.bits == 16 else np.uint8) ^ (1 << (info.bits - 1))
        out = curve[index]
    else:
        out, how = display_curve(ds, arr, path, (float(arr.min()), float(arr.max())))
    return out, how | {"photometric": photometric}


def display_curve(ds, stored: np.ndarray, path: str, extent: tuple) -> tuple[np.ndarray, dict]:
    """Map stored values to display greyscale in [0, 1] (1 = white). ``extent`` is the image's
    stored-value range, used when the header gives no window or VOI LUT (min-max)."""
    from pydicom.pixels import apply_modality_lut, apply_voi

    check_modality_lut(ds, path)
    with np.errstate(over="ignore", invalid="ignore"):
        values = apply_modality_lut(stored, ds).astype(np.float32)
    if not np.isfinite(values).all():
        raise InvalidInputError(f"{path}: (0028,1053) Rescale Slope {ds.get('RescaleSlope')} and (0028,1052) "
                                f"Rescale Intercept {ds.get('RescaleIntercept')} give non-finite values",
                                expected="a rescale that keeps values finite", fix="correct the rescale tags")
    how: dict = {}
    center, width = _tag_number(ds, "WindowCenter", "(0028,1050) Window Center", path), \
        _tag_number(ds, "WindowWidth", "(0028,1051) Window Width", path)
    if (center is None) != (width is None):
        raise InvalidInputError(f"{path} has only one of (0028,1050) Window Center and (0028,1051) Window Width",
                                expected="both or neither", fix="correct the tags or remove both")
    if center is not None:
        if width <= 0:
            raise InvalidInputError(f"{path} has (0028,1051) Window Width {ds.WindowWidth}",
                                    expected="a positive width",
                                    fix="correct the tag or remove Window Center/Width")
        function = str(ds.get("VOILUTFunction", "LINEAR")).upper()
        with np.errstate(over="ignore"):
            out = window(values, center, width, function)
        how.update(voi="window", center=center, width=width, function=function)
    elif ds.get("VOILUTSequence"):
        bits = _check_lut(ds.VOILUTSequence[0], "(0028,3010) VOI LUT Sequence", path, (8, 9, 10, 11, 12, 13, 14, 15, 16))
        out = apply_voi(np.rint(values).astype(np.int64), ds).astype(np.float32)
        out /= float(2 ** bits - 1)
        how.update(voi="lut")
    else:
        lo, hi = apply_modality_lut(np.array(extent, dtype=stored.dtype), ds).astype(np.float32)
        out = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
        how.update(voi="min-max")
    if str(ds.get("PhotometricInterpretation")) == "MONOCHROME1":
        out = 1.0 - out
    return np.clip(out, 0.0, 1.0).astype(np.float32), how


def check_modality_lut(ds, path: str) -> None:
    """A Modality LUT that can be applied, or a finite, non-zero rescale slope and finite intercept."""
    if ds.get("ModalityLUTSequence"):
        _check_lut(ds.ModalityLUTSequence[0], "(0028,3000) Modality LUT Sequence", path, (8, 16))
        return
    slope = _tag_number(ds, "RescaleSlope", "(0028,1053) Rescale Slope", path)
    intercept = _tag_number(ds, "RescaleIntercept", "(0028,1052) Rescale Intercept", path)
    if slope == 0 and intercept is not None:
        raise InvalidInputError(f"{path} has (0028,1053) Rescale Slope 0 (every pixel would get one value)",
                                expected="a non-zero slope", fix="correct the tag (1 when values are stored as-is)")


def _check_lut(item, name: str, path: str, depths: tuple) -> int:
    """A LUT item whose (0028,3002) LUT Descriptor and (0028,3006) LUT Data agree; returns its bit depth."""
    desc = item.get("LUTDescriptor")
    if desc is None or not hasattr(desc, "__len__") or len(desc) != 3 or desc[2] not in depths:
        raise InvalidInputError(f"{path}: {name} has (0028,3002) LUT Descriptor {desc!r}",
                                expected=f"three values: entries, first stored value, bits in {depths}", fix=FIX)
    entries = desc[0] or 2**16
    data = item.get("LUTData")
    count = 0 if data is None else (len(data) // 2 if isinstance(data, bytes) else len(data))
    if count < entries:
        raise InvalidInputError(f"{path}: {name} has {count} (0028,3006) LUT Data entries",
                                expected=f"{entries} entries, as its (0028,3002) LUT Descriptor says", fix=FIX)
    return int(desc[2])


def _tag_number(ds, keyword: str, name: str, path: str) -> float | None:
    """A finite number from a tag (the first of several alternatives, as viewers do); None if absent or empty."""
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    first = _first(value)
    try:
        number = float(first)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise InvalidInputError(f"{path} has {name} {value!r}", expected="a finite number",
                                fix=f"correct {name} or remove it")
    return number


def window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM window (PS3.3 C.11.2.1.2) mapped to [0, 1] instead of the output bit range."""
    if function == "LINEAR_EXACT":
        return np.clip((values - (center - width / 2)) / width, 0, 1)
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if width <= 1:  # LINEAR with width 1 is a threshold
        return (values > center - 0.5).astype(np.float32)
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0, 1)


def minmax(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    return (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)


def _first(value):
    """Window tags may hold several alternatives (VM > 1): use the first, as viewers do."""
    if isinstance(value, (str, bytes)):
        return value
    try:
        return value[0] if len(value) else None
    except TypeError:
        return value
