"""A DICOM file's header: read (Pixel Data left in the file's bytes until used), checked before any
pixel is decoded (greyscale, one sample, a size within engine/limits.py), the facts a result shows,
and the pixel spacing it states; pydicom's errors turned into InvalidInputError at one boundary.
"""
from __future__ import annotations

import contextlib
import math
import struct
from dataclasses import dataclass

from ... import limits
from ...errors import InvalidInputError
from .syntaxes import DEFLATED, uid_of

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

    if uid_of(ds) == DEFLATED or ds.original_encoding != (False, True):
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


def describe(ds) -> dict:
    """The few header facts a result and the viewer's overlay need (no patient name)."""
    keys = ("Modality", "StudyDate", "SeriesDescription", "BodyPartExamined", "ViewPosition", "PatientAge",
            "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
    meta = {k: str(ds.get(k, "")) for k in keys if ds.get(k) not in (None, "")}
    meta["TransferSyntaxUID"] = uid_of(ds)
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
