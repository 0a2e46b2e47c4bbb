"""DICOM pixel data to display-space greyscale, the way a viewer shows it.

Order (PS3.3 C.11): stored values -> Modality LUT (rescale slope/intercept or LUT) ->
VOI (window or VOI LUT) -> MONOCHROME1 inverted, so that 1.0 is always white.
"""
from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError

GREYSCALE = ("MONOCHROME1", "MONOCHROME2")


def read_dataset(path: str, data: bytes | None = None):
    """Read a DICOM file (or its bytes, already read), refusing anything that is not one."""
    import io

    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(io.BytesIO(data) if data is not None else path)
    except InvalidDicomError:
        raise InvalidInputError(f"{path} is not a DICOM file (no 'DICM' preamble)",
                                expected="a DICOM Part 10 file, PNG or JPEG",
                                fix="export the study from the PACS as DICOM") from None
    except Exception as exc:  # pydicom raises many kinds on truncated files
        raise InvalidInputError(f"{path} could not be parsed as DICOM ({exc})",
                                fix="check that the file was copied completely") from None


def decode_pixels(ds, path: str) -> np.ndarray:
    """Decode (7FE0,0010) Pixel Data, naming the transfer syntax when it cannot be."""
    if "PixelData" not in ds:
        raise InvalidInputError(
            f"{path} has no (7FE0,0010) Pixel Data (SOP class {ds.get('SOPClassUID', 'unknown')})",
            expected="an image object", fix="open an image series, not a report or waveform")
    tsyntax = ds.file_meta.get("TransferSyntaxUID", "unknown") if hasattr(ds, "file_meta") else "unknown"
    try:
        return ds.pixel_array
    except Exception as exc:
        name = getattr(tsyntax, "name", str(tsyntax))
        raise InvalidInputError(
            f"{path}: the pixel data in transfer syntax {name} ({tsyntax}) could not be decoded ({exc})",
            expected="uncompressed, RLE, JPEG, JPEG-LS or JPEG 2000 data that decodes cleanly",
            fix="re-export the image uncompressed from the PACS, or install pylibjpeg plugins for it",
        ) from None


def to_display(ds, arr: np.ndarray, path: str) -> tuple[np.ndarray, dict]:
    """Apply Modality LUT, VOI and MONOCHROME1 inversion; return [0, 1] float32 and how.

    For 8/16-bit stored values the whole chain is one lookup table indexed by the stored
    value (one pass over the pixels); wider data goes through the float path.
    """
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in GREYSCALE:
        raise InvalidInputError(
            f"{path} has (0028,0004) Photometric Interpretation {photometric or 'missing'}",
            expected="a greyscale image (MONOCHROME1 or MONOCHROME2)",
            fix="use the original greyscale radiograph, not a colour secondary capture")
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

    values = apply_modality_lut(stored, ds).astype(np.float32)
    how: dict = {}
    if "WindowCenter" in ds and "WindowWidth" in ds:
        center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        if not width or width <= 0:
            raise InvalidInputError(f"{path} has (0028,1051) Window Width {ds.WindowWidth}",
                                    expected="a positive width",
                                    fix="correct the tag or remove Window Center/Width")
        function = str(ds.get("VOILUTFunction", "LINEAR")).upper()
        out = window(values, float(center), float(width), function)
        how.update(voi="window", center=float(center), width=float(width), function=function)
    elif ds.get("VOILUTSequence"):
        lut = ds.VOILUTSequence[0]
        out = apply_voi(np.rint(values).astype(np.int64), ds).astype(np.float32)
        out /= float(2 ** int(lut.LUTDescriptor[2]) - 1)
        how.update(voi="lut")
    else:
        lo, hi = apply_modality_lut(np.array(extent, dtype=stored.dtype), ds).astype(np.float32)
        out = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
        how.update(voi="min-max")
    if str(ds.get("PhotometricInterpretation")) == "MONOCHROME1":
        out = 1.0 - out
    return np.clip(out, 0.0, 1.0).astype(np.float32), how


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
    try:
        return value[0]
    except TypeError:
        return value


def describe(ds) -> dict:
    """The few header facts a result and the viewer's overlay need (no patient name)."""
    keys = ("Modality", "StudyDate", "SeriesDescription", "BodyPartExamined",
            "ViewPosition", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
    meta = {k: str(ds.get(k, "")) for k in keys if ds.get(k) not in (None, "")}
    meta["TransferSyntaxUID"] = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
    return meta
