"""DICOM pixel data to display-space greyscale, the way a viewer shows it.

Order (PS3.3 C.11): stored values -> Modality LUT (rescale slope/intercept or LUT) ->
VOI (window or VOI LUT) -> MONOCHROME1 inverted, so that 1.0 is always white.
Every tag that drives the chain is checked first (finite, in range, consistent), and the
header's size is checked against engine/limits.py before any pixel is decoded.
"""
from __future__ import annotations

import contextlib
import math
import struct
from dataclasses import dataclass

import numpy as np

from .. import limits
from ..errors import InvalidInputError
from .syntaxes import DEFLATED

GREYSCALE = ("MONOCHROME1", "MONOCHROME2")
FIX = "check that the file was copied completely, or re-export it from the PACS"

# What pydicom and its pixel decoders raise on malformed or truncated files (never a bare Exception).
PARSE_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, LookupError, EOFError, OSError,
                struct.error, OverflowError, NotImplementedError, RuntimeError, ZeroDivisionError)


@contextlib.contextmanager
def parse_errors(path: str, what: str = "could not be parsed as DICOM"):
    """The one boundary of the DICOM readers: turn pydicom's errors into InvalidInputError."""
    from pydicom.errors import BytesLengthException, InvalidDicomError

    try:
        yield
    except InvalidDicomError:
        raise InvalidInputError(f"{path} is not a DICOM file (no 'DICM' preamble)",
                                expected="a DICOM Part 10 file, PNG or JPEG",
                                fix="export the study from the PACS as DICOM") from None
    except (*PARSE_ERRORS, BytesLengthException) as exc:
        raise InvalidInputError(f"{path} {what} ({type(exc).__name__}: {exc})", fix=FIX) from None


def greyscale_photometric(ds, path: str) -> str:
    """(0028,0004) Photometric Interpretation, refused unless MONOCHROME1 or MONOCHROME2."""
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in GREYSCALE:
        raise InvalidInputError(
            f"{path} has (0028,0004) Photometric Interpretation {photometric or 'missing'}",
            expected="a greyscale image (MONOCHROME1 or MONOCHROME2)",
            fix="use the original greyscale radiograph, not a colour secondary capture")
    return photometric


DEFER_BYTES = 1 << 16  # elements this large (pixel data) are read from the bytes when first used
PIXEL_DATA = 0x7FE00010
UNDEFINED = 0xFFFFFFFF


def read_dataset(path: str, data: bytes | None = None):
    """Read a DICOM file (or its bytes, already read), refusing anything that is not one.

    From bytes, Pixel Data stays in them until used (a deferred element): the reduced decode
    reads it in place, and encapsulated data is not split into its hundreds of fragments by
    pydicom unless a full decode needs them (4 ms of a 1955 x 1841 JPEG 2000 read)."""
    import io

    import pydicom

    with parse_errors(path):
        if data is None:
            return pydicom.dcmread(path)
        stream = io.BytesIO(data)
        ds = pydicom.dcmread(stream, defer_size=DEFER_BYTES, stop_before_pixels=True)
        if not _defer_pixel_data(ds, data, stream.tell()):  # anything unusual: pydicom reads it all
            ds = pydicom.dcmread(io.BytesIO(data), defer_size=DEFER_BYTES)
        return ds


def _defer_pixel_data(ds, data: bytes, at: int) -> bool:
    """Put explicit-VR little-endian (7FE0,0010) Pixel Data at ``at`` back into ``ds`` as a deferred
    element when it is the file's last element; False for anything else (the caller parses in full)."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    syntax = str(getattr(ds, "file_meta", {}).get("TransferSyntaxUID", ""))
    if syntax == DEFLATED or ds.original_encoding != (False, True):
        return False  # positions in an inflated stream are not positions in ``data``
    if at >= len(data):
        return True  # no pixel data: check_header names that
    if at + 12 > len(data):
        return False
    group, element, vr, length = struct.unpack_from("<HH2s2xI", data, at)
    if (group << 16 | element) != PIXEL_DATA or vr not in (b"OB", b"OW"):
        return False
    end = _value_end(data, at + 12, length)
    if end is None:
        return False
    if end < len(data):  # elements after the pixel data (trailing padding, signatures): pydicom reads them
        import io

        from pydicom.filereader import read_dataset as read_elements

        try:
            tail = read_elements(io.BytesIO(data[end:]), False, True)
        except PARSE_ERRORS:
            return False
        for tag in tail.keys():
            ds[tag] = tail[tag]
    ds[PIXEL_DATA] = RawDataElement(Tag(PIXEL_DATA), vr.decode(), length, None, at + 12, False, True, True,
                                    length == UNDEFINED)
    return True


def _value_end(data: bytes, start: int, length: int) -> int | None:
    """Where a value starting at ``start`` ends: after ``length`` bytes, or for an undefined length
    (encapsulated) after its Sequence Delimitation Item, walking the item headers."""
    if length != UNDEFINED:
        return start + length if start + length <= len(data) else None
    items = _items(data, start)
    return None if items is None else items[1]


def _items(data, start: int, delimited: bool = True) -> tuple[list, int] | None:
    """The (offset, length) of each item of encapsulated pixel data starting at ``start`` (the
    Basic Offset Table first), and where its Sequence Delimitation Item ends (``delimited=False``:
    a value as pydicom holds it, which ends with the last item); None if malformed."""
    at, items = start, []
    while at + 8 <= len(data) or (not delimited and at == len(data)):
        if at == len(data):
            return items, at
        group, element, item_length = struct.unpack_from("<HHI", data, at)
        if (group, element) == (0xFFFE, 0xE0DD):
            return items, at + 8
        if (group, element) != (0xFFFE, 0xE000) or item_length == UNDEFINED or at + 8 + item_length > len(data):
            return None
        items.append((at + 8, item_length))
        at += 8 + item_length
    return None


def single_frame(pixels) -> bytes | None:
    """The codestream of a one-frame image from its encapsulated Pixel Data value (every fragment after
    the Basic Offset Table, joined once); None if the items are malformed (pydicom then decides)."""
    view = memoryview(pixels)
    items = _items(view, 0, delimited=False)
    if items is None or len(items[0]) < 2:
        return None
    return b"".join(view[at:at + n] for at, n in items[0][1:])


def load_pixel_data(ds, data: bytes | None) -> None:
    """Give a deferred (7FE0,0010) its value from ``data`` in one copy, before a full decode:
    pydicom's own deferred read walks an encapsulated value item by item (11 of 65 ms of a
    1955 x 1841 RLE study)."""
    from pydicom.dataelem import DataElement

    elem = ds.get_item(PIXEL_DATA, keep_deferred=True)
    if elem is not None and getattr(elem, "value", 0) is None and data is not None:
        value = pixel_bytes(ds, data)
        if isinstance(value, memoryview):
            ds[PIXEL_DATA] = DataElement(PIXEL_DATA, elem.VR, bytes(value), is_undefined_length=elem.length == UNDEFINED)


def pixel_bytes(ds, data: bytes | None):
    """(7FE0,0010) Pixel Data's value: a view into ``data`` (the bytes read_dataset parsed) while
    it has not been read, without a copy; else the value pydicom holds."""
    elem = ds.get_item(PIXEL_DATA, keep_deferred=True)
    tell, length = getattr(elem, "value_tell", None), getattr(elem, "length", None)
    if getattr(elem, "value", 0) is None and data is not None and tell is not None and length is not None:
        end = _value_end(data, tell, length)
        if end is not None:  # pydicom's value of encapsulated data stops before the delimiter item
            return memoryview(data)[tell:end - 8 if length == UNDEFINED else end]
    return ds.PixelData


@dataclass(frozen=True)
class FrameShape:
    rows: int
    columns: int
    frames: int


def check_header(ds, path: str) -> FrameShape:
    """Greyscale, one sample per pixel, and a size within engine/limits.py: checked before decoding."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        if "WaveformSequence" in ds:
            raise InvalidInputError(f"{path} is a DICOM ECG waveform ((5400,0100) Waveform Sequence), not an image",
                                    expected="a DICOM image object",
                                    fix="run it through an ECG bundle (task ecg_rhythm, e.g. bundles/ecg-rhythm)")
        raise InvalidInputError(
            f"{path} has no (7FE0,0010) Pixel Data (SOP class {ds.get('SOPClassUID', 'unknown')})",
            expected="an image object", fix="open an image series, not a report or waveform")
    photometric = greyscale_photometric(ds, path)
    samples = ds.get("SamplesPerPixel", 1)
    if samples != 1:
        raise InvalidInputError(f"{path} has (0028,0002) Samples per Pixel {samples} with {photometric}",
                                expected="1 sample per pixel for a greyscale image", fix=FIX)
    rows = limits.check_count(ds.get("Rows"), "(0028,0010) Rows", 2**16 - 1, path)
    columns = limits.check_count(ds.get("Columns"), "(0028,0011) Columns", 2**16 - 1, path)
    frames = limits.check_count(ds.get("NumberOfFrames", 1) or 1, "(0028,0008) Number of Frames",
                                limits.MAX_FRAMES, path)
    bits = ds.get("BitsAllocated")
    if bits not in (1, 8, 16, 32, 64):
        raise InvalidInputError(f"{path} has (0028,0100) Bits Allocated {bits!r}",
                                expected="1, 8, 16, 32 or 64", fix=FIX)
    limits.check_pixels(rows, columns, path, "each frame ((0028,0011) Columns x (0028,0010) Rows)")
    if rows * columns * max(bits, 8) // 8 > limits.MAX_FRAME_BYTES:
        raise InvalidInputError(f"{path}: one frame of {columns} x {rows} at {bits} bits is "
                                f"{rows * columns * bits // 8:,} bytes",
                                expected=f"at most {limits.MAX_FRAME_BYTES:,} bytes per frame (engine/limits.py)",
                                fix="downsample the image before analysis")
    return FrameShape(rows, columns, frames)


class DecoderPanic(RuntimeError):
    """A Rust decoder (pylibjpeg-rle, through pyo3) panicked on malformed data."""


def _pixel_array(pixel_array, ds, index, plugin: str) -> np.ndarray:
    """pydicom's pixel_array; a pyo3 ``PanicException`` (a BaseException, so no ``except
    Exception`` sees it) becomes a DecoderPanic, one of PARSE_ERRORS. Found by tests/test_fuzz.py:
    a malformed RLE segment made pylibjpeg-rle index out of bounds."""
    try:
        return pixel_array(ds, index=index, decoding_plugin=plugin)
    except BaseException as exc:
        if type(exc).__name__ != "PanicException":
            raise
        raise DecoderPanic(str(exc)) from None


def decode_pixels(ds, path: str, index: int | None = None, shape: FrameShape | None = None) -> np.ndarray:
    """Decode one frame (``index``) of the pixel data, naming the transfer syntax when it cannot be."""
    from pydicom.pixels import pixel_array

    from .codecs import preferred_plugin

    tsyntax = ds.file_meta.get("TransferSyntaxUID", "unknown") if hasattr(ds, "file_meta") else "unknown"
    try:
        plugin = preferred_plugin(ds)
        try:
            arr = _pixel_array(pixel_array, ds, index, plugin)
        except PARSE_ERRORS:
            if not plugin:
                raise
            arr = _pixel_array(pixel_array, ds, index, "")  # the fast plugin refused this file: pydicom's own order
    except PARSE_ERRORS as exc:
        name = getattr(tsyntax, "name", str(tsyntax))
        raise InvalidInputError(
            f"{path}: the pixel data in transfer syntax {name} ({tsyntax}) could not be decoded "
            f"({type(exc).__name__}: {exc})",
            expected="uncompressed, RLE, JPEG, JPEG-LS or JPEG 2000 data that decodes cleanly",
            fix="re-export the image uncompressed from the PACS, or install pylibjpeg plugins for it",
        ) from None
    if shape is not None and arr.shape != (shape.rows, shape.columns):
        raise InvalidInputError(f"{path}: the decoded frame has shape {arr.shape}",
                                expected=f"({shape.rows}, {shape.columns}) from (0028,0010) Rows and "
                                         "(0028,0011) Columns", fix=FIX)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InvalidInputError(f"{path}: (7FE0,0008) Float Pixel Data holds NaN or infinite values",
                                expected="finite pixel values", fix=FIX)
    return arr


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


def describe(ds) -> dict:
    """The few header facts a result and the viewer's overlay need (no patient name)."""
    keys = ("Modality", "StudyDate", "SeriesDescription", "BodyPartExamined", "ViewPosition", "PatientAge",
            "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
    meta = {k: str(ds.get(k, "")) for k in keys if ds.get(k) not in (None, "")}
    meta["TransferSyntaxUID"] = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
    return meta


US_UNIT_CM = 3  # (0018,6024) / (0018,6026) Physical Units X / Y Direction: 3 = cm


def pixel_spacing_mm(path: str) -> tuple[tuple[float, float], str] | None:
    """((row, column) mm per pixel, where it came from) from a DICOM header, or None if it states none.

    (0028,0030) Pixel Spacing first; else the largest 2-D region of (0018,6011) Sequence of
    Ultrasound Regions whose physical units are cm (code 3), Physical Delta X / Y (0018,602C) /
    (0018,602E) converted to mm. Values that are not finite and positive are refused."""
    import pydicom

    with parse_errors(path):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        spacing = ds.get("PixelSpacing")
        if spacing not in (None, ""):
            values = [_positive(v, "(0028,0030) Pixel Spacing", path) for v in (spacing if len(spacing) else [])]
            if len(values) != 2:
                raise InvalidInputError(f"{path} has (0028,0030) Pixel Spacing {spacing!r}",
                                        expected="two values: row spacing, column spacing in mm",
                                        fix="correct the tag, or remove it and give the pixel size")
            return (values[0], values[1]), "DICOM (0028,0030) Pixel Spacing"
        regions = [r for r in ds.get("SequenceOfUltrasoundRegions", None) or []
                   if r.get("PhysicalUnitsXDirection") == US_UNIT_CM and r.get("PhysicalUnitsYDirection") == US_UNIT_CM
                   and r.get("RegionSpatialFormat", 1) == 1]
        if not regions:
            return None

        def area(r):
            return (int(r.get("RegionLocationMaxX1", 0)) - int(r.get("RegionLocationMinX0", 0))) * \
                   (int(r.get("RegionLocationMaxY1", 0)) - int(r.get("RegionLocationMinY0", 0)))

        region = max(regions, key=area)
        dx = _positive(region.get("PhysicalDeltaX"), "(0018,602C) Physical Delta X", path)
        dy = _positive(region.get("PhysicalDeltaY"), "(0018,602E) Physical Delta Y", path)
        return (abs(dy) * 10.0, abs(dx) * 10.0), "DICOM (0018,6011) ultrasound region calibration"


def _positive(value, name: str, path: str) -> float:
    try:
        number = abs(float(value))
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number <= 0 or number > 1000:
        raise InvalidInputError(f"{path} has {name} {value!r}", expected="a finite spacing > 0",
                                fix=f"correct {name}, or give the pixel size explicitly (--pixel-size)")
    return number
