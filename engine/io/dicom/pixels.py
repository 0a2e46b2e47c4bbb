"""Decode a DICOM frame: in full, or at the resolution a model needs where the transfer syntax allows it.

A full decode goes through pydicom, trying first the plugin the transfer-syntax table
(io/dicom/syntaxes.py) names as the fastest installed one, with OpenJPEG on all cores.

Uncompressed data is averaged over 2**r x 2**r blocks straight from the file's bytes. JPEG 2000
keeps the image at every wavelet level: OpenJPEG's ``reduce`` decodes only the levels down to
1/2**r of the size (through Pillow's Jpeg2K plugin). Baseline JPEG decodes at 1/2, 1/4 or 1/8
with DCT scaling (Pillow's ``draft``). Syntaxes without such a mode (JPEG-LS, RLE, lossless
JPEG) are decoded in full and then block-averaged like uncompressed data (``reduce_decoded``),
so the display chain and the resize touch 1/4**r of the pixels. Anything these paths do not
handle exactly (signed or multi-component data, a precision other than Bits Stored, a Pillow
that behaves differently) returns ``None``: the caller decodes in full.

The stored values come back unscaled, so the Modality LUT, VOI and MONOCHROME1 steps apply
unchanged; the image is smaller. But averaging (or a wavelet low-pass of) stored values and then
windowing is not the full image windowed then resized, and a model may notice: on pydicom-data's
RG1 chest film the pneumonia model's score moved by up to 0.02 (decoded at >= 2x its input) and
0.05 (at 1x). So each artifact's build measures it (export/steps/validate.reduced_decode_choice,
at 1x and 2x, on the golden studies and pydicom-data's films) and records the smallest margin
within the artifact's own tolerance as ``Artifact.decode_margin`` (0: always full). Reads follow
it by default; ``reduced_resolution(True / False)`` or ``MEDEXPORT_REDUCED_DECODE=1 / 0`` force
it on or off.
"""
from __future__ import annotations

import contextlib
import contextvars
import io
import os
import struct
from dataclasses import dataclass

import numpy as np

from ...errors import InvalidInputError
from .header import FIX, PARSE_ERRORS, FrameShape, pixel_bytes, single_frame
from .syntaxes import syntax_of


def use_all_cores_for_jpeg2000() -> None:
    """OpenJPEG (2.3+) decodes code-blocks on ``OPJ_NUM_THREADS`` threads, read when a decoder is
    created; a site's own setting wins."""
    os.environ.setdefault("OPJ_NUM_THREADS", str(os.cpu_count() or 1))


def preferred_plugin(ds) -> str:
    """The fastest installed pydicom decoding plugin for this dataset (the plugin column of
    io/dicom/syntaxes.py), or "" for pydicom's own choice."""
    syntax = syntax_of(ds)
    if syntax is None or not syntax.plugin:
        return ""
    if syntax.family == "jpeg2000":  # Pillow's JPEG 2000 path: unsigned greyscale only (pydicom corrects signed data itself)
        if ds.get("PixelRepresentation", 0) != 0 or ds.get("SamplesPerPixel", 1) != 1:
            return ""
        use_all_cores_for_jpeg2000()
    from pydicom.pixels import get_decoder

    return syntax.plugin if syntax.plugin in get_decoder(syntax.uid).available_plugins else ""


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


MAX_REDUCE = 5
# what Pillow raises when a codestream does not decode the way this module asks
PILLOW_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError, TypeError,
                 AttributeError)

FORCED_MARGIN = 2  # a reduced decode asked for on an artifact that was not checked for one keeps 2 x its input
# "bundle": as each artifact's check allows (Artifact.decode_margin); "reduced" / "full": forced
_DEFAULT = {"1": "reduced", "0": "full"}.get(os.environ.get("MEDEXPORT_REDUCED_DECODE", ""), "bundle")
_MODE = contextvars.ContextVar("medexport_reduced_decode", default=_DEFAULT)


@contextlib.contextmanager
def reduced_resolution(enabled: bool | None = True):
    """Within this block (this thread / context): ``True`` decodes reduced wherever a syntax
    allows, even for an artifact whose check failed; ``False`` always in full; ``None``: the
    process default (``MEDEXPORT_REDUCED_DECODE`` 1 / 0, else as each artifact's check allows)."""
    token = _MODE.set(_DEFAULT if enabled is None else ("reduced" if enabled else "full"))
    try:
        yield
    finally:
        _MODE.reset(token)


def margin(checked: int) -> int:
    """How many times the model's input a read must keep (0: decode in full), for an artifact
    whose build checked a reduced decode at ``checked`` x its input (0: not checked, or failed)."""
    mode = _MODE.get()
    if mode == "full":
        return 0
    return (checked or FORCED_MARGIN) if mode == "reduced" else checked


def full_resolution():
    """Within this block every read decodes at full resolution."""
    return reduced_resolution(False)


@dataclass(frozen=True)
class Reduction:
    """Where a reduced decode's pixels lie on the full image."""

    full_shape: tuple  # (H, W) at full resolution
    step: int  # full pixels per decoded pixel (2**r)
    centre: float  # full-image coordinate (pixel edges at integers) of decoded pixel 0's centre

    def box(self, box: tuple) -> tuple:
        """A full-image (left, top, right, bottom) box in decoded-image coordinates."""
        return tuple((v - self.centre) / self.step + 0.5 for v in box)


@dataclass(frozen=True)
class Reduced:
    stored: np.ndarray  # (h, w) stored values, the dtype pydicom's decoder gives
    how: str  # e.g. "JPEG 2000 reduce 3 (1/8)"
    reduction: Reduction


def levels_for(full: tuple, need: tuple, limit: int = MAX_REDUCE) -> int:
    """The largest r <= ``limit`` with ceil(side / 2**r) >= need on both sides (0: none)."""
    r = 0
    while r < limit and all(-(-s // (2 << r)) >= n for s, n in zip(full, need)):
        r += 1
    return r


def reduced_frame(ds, rows: int, columns: int, frames: int, index: int | None,
                  need: tuple | None, data: bytes | None = None) -> Reduced | None:
    """The frame decoded at reduced resolution, or None where a full decode is needed."""
    if need is None:
        return None
    syntax = syntax_of(ds)
    if syntax is None or not syntax.reduced or ds.get("PixelRepresentation", 0) != 0 or "PixelData" not in ds:
        return None
    if levels_for((rows, columns), need) == 0:
        return None
    pixels = pixel_bytes(ds, data)
    if syntax.reduced == "blocks":
        return _native(ds, pixels, rows, columns, index or 0, need)
    from pydicom.encaps import get_frame

    try:
        data = single_frame(pixels) if frames == 1 else None
        data = data if data is not None else get_frame(bytes(pixels), index or 0, number_of_frames=frames)
        if syntax.reduced == "wavelet":
            return _j2k(data, ds, rows, columns, need)
        return _jpeg(data, ds, rows, columns, need)
    except PILLOW_ERRORS:
        return None  # this stream is not one the fast path handles: the full decoder will (or will say why)


def _native(ds, data, rows: int, columns: int, index: int, need: tuple) -> Reduced | None:
    """Uncompressed 8/16-bit data read in place and averaged over k x k blocks (k = 2**r): the
    image a model needs without a display pass over every pixel."""
    bits, stored = ds.get("BitsAllocated"), ds.get("BitsStored")
    if bits not in (8, 16) or not isinstance(stored, int) or not 0 < stored <= bits:
        return None
    dtype = np.dtype("<u2" if bits == 16 else "u1")
    count = rows * columns
    if len(data) < (index + 1) * count * dtype.itemsize:
        return None  # the full decoder names the short data
    arr = np.frombuffer(data, dtype, count=count, offset=index * count * dtype.itemsize).reshape(rows, columns)
    k = 1 << levels_for((rows, columns), need)
    h, w = rows // k, columns // k
    if h < need[0] or w < need[1]:
        return None
    block = arr[:h * k, :w * k]
    if stored < bits and block.max() >> stored:  # bits above Bits Stored are not part of the value
        block = block & np.asarray((1 << stored) - 1, dtype)  # (pydicom masks them too); one pass to look first
    out = block_mean(block, k)
    return Reduced(out, f"uncompressed, {k} x {k} block mean", Reduction((rows, columns), k, k / 2))


def reduce_decoded(arr: np.ndarray, need: tuple | None, how: str) -> Reduced | None:
    """A frame decoded in full (JPEG-LS, RLE, lossless JPEG: no reduced mode) averaged over k x k
    blocks before the display chain, like uncompressed data: the Modality LUT, VOI and resize then
    touch 1/k**2 of the pixels (19 of 20 ms of a 1955 x 1841 study's preprocessing)."""
    if need is None or arr.ndim != 2 or arr.dtype not in (np.uint8, np.uint16):
        return None
    k = 1 << levels_for(arr.shape, need)
    if k == 1:
        return None
    h, w = arr.shape[0] // k, arr.shape[1] // k
    return Reduced(block_mean(arr[:h * k, :w * k], k), f"{how} decoded in full, {k} x {k} block mean",
                   Reduction(arr.shape, k, k / 2))


def block_mean(block: np.ndarray, k: int) -> np.ndarray:
    """Exact means over k x k blocks of an integer image whose sides are multiples of k, as
    float32: k strided row adds, then k strided column adds, in uint32 (2.8 ms for RG1 at k = 4;
    a (h, k, w, k) reshape-sum takes 18 ms, Pillow's float ``reduce`` with its copies 23 ms)."""
    rows = block[0::k].astype(np.uint32)
    for i in range(1, k):
        rows += block[i::k]
    sums = rows[:, 0::k].copy()
    for i in range(1, k):
        sums += rows[:, i::k]
    out = sums.astype(np.float32)
    out *= np.float32(1.0 / (k * k))
    return out


def _siz_cod(data: bytes) -> tuple[int, int, int, int, int] | None:
    """(components, precision, signed, width, height) from SIZ and the level count from COD of a
    raw J2K codestream; None if the markers are not where a main header keeps them."""
    if data[:4] != b"\xff\x4f\xff\x51":
        return None
    width, height, x0, y0 = struct.unpack(">IIII", data[8:24])
    components = struct.unpack(">H", data[40:42])[0]
    ssiz = data[42]
    cod = data.find(b"\xff\x52", 42)
    if cod < 0 or x0 or y0:
        return None
    levels = data[cod + 9]
    return components, (ssiz & 0x7F) + 1, ssiz >> 7, (width, height), levels


def _j2k(data: bytes, ds, rows: int, columns: int, need: tuple) -> Reduced | None:
    from PIL import Image, ImageFile

    header = _siz_cod(data)
    if header is None:
        return None
    components, precision, signed, size, levels = header
    bits = ds.get("BitsAllocated")
    if components != 1 or signed or size != (columns, rows) or precision != ds.get("BitsStored") \
            or bits not in (8, 16) or precision > bits:
        return None
    r = levels_for((rows, columns), need, min(MAX_REDUCE, levels))
    if r == 0:
        return None
    use_all_cores_for_jpeg2000()
    img = Image.open(io.BytesIO(data))
    # Pillow's own ``reduce`` rounds the reduced size where OpenJPEG takes the ceiling, and then
    # refuses e.g. 1841 rows at r = 2; set the size OpenJPEG will produce and load the tile directly
    out = (-(-columns // (1 << r)), -(-rows // (1 << r)))
    codec, _, _, fd, length = img.tile[0].args
    img._reduce, img._size = r, out
    img.tile = [ImageFile._Tile(img.tile[0].codec_name, (0, 0, *out), img.tile[0].offset,
                                (codec, r, img.layers, fd, length))]
    ImageFile.ImageFile.load(img)
    arr = np.asarray(img)
    if arr.shape != out[::-1]:
        return None
    if arr.dtype == np.uint16:  # Pillow scales a p-bit component to 16 bits: undo it exactly
        shift = 16 - precision
        if shift and (arr & ((1 << shift) - 1)).any():
            return None
        arr = arr >> shift
    elif img.mode != "L":
        return None
    dtype = np.uint8 if bits == 8 else np.uint16
    # a wavelet low-pass sample sits on the even full-resolution sample (ISO 15444-1 Annex F):
    # decoded pixel i is centred on full pixel i * 2**r, not on the middle of its 2**r block
    return Reduced(arr.astype(dtype, copy=False), f"JPEG 2000 reduce {r} (1/{1 << r})",
                   Reduction((rows, columns), 1 << r, 0.5))


def _jpeg(data: bytes, ds, rows: int, columns: int, need: tuple) -> Reduced | None:
    from PIL import Image

    if ds.get("BitsAllocated") != 8 or ds.get("SamplesPerPixel", 1) != 1:
        return None
    img = Image.open(io.BytesIO(data))
    if img.mode != "L" or img.size != (columns, rows):
        return None
    img.draft("L", (need[1], need[0]))
    img.load()
    arr = np.asarray(img)
    if arr.shape[0] < need[0] or arr.shape[1] < need[1] or arr.shape == (rows, columns):
        return None
    step = -(-columns // arr.shape[1])
    if -(-rows // step) != arr.shape[0] or -(-columns // step) != arr.shape[1]:
        return None
    # a scaled IDCT averages each step x step block: decoded pixel i is centred on its block
    return Reduced(arr, f"JPEG DCT scaling 1/{step}", Reduction((rows, columns), step, step / 2))
