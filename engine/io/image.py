"""Read a study image (DICOM, PNG, JPEG, TIFF, BMP or a numpy array) into display-space greyscale."""
from __future__ import annotations

import hashlib
import os
import struct
import threading
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from .. import limits
from ..checksums import sha256_file
from ..errors import InvalidInputError
from . import dicom

ECG_SUFFIXES = (".hea", ".dat", ".mat", ".xml", ".csv", ".atr")  # WFDB, HL7 aECG, CSV
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom", "")
PICTURE_FIX = "check the file is a complete PNG, JPEG, TIFF or BMP"

# What Pillow raises on malformed files (its plugins use SyntaxError for broken headers).
PILLOW_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError, TypeError,
                 ZeroDivisionError, OverflowError)
# Pillow mode -> how its values become display greyscale in [0, 1]
SCALE = {"L": 255.0, "I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0}


@dataclass(frozen=True)
class ImageStudy:
    """One greyscale frame in [0, 1] (1.0 is white) plus where it came from."""

    pixels: np.ndarray  # float32 (H, W); (H, W, 3) RGB when read with colour=True
    source: str  # a path, or "<array>"
    kind: str  # dicom | png | jpeg | ... | array
    digest: str | Future  # sha256 of the file bytes (or of the array) for the audit log; a DICOM's is computed
    # on a background thread and may still be running (``sha256`` waits for it; a model's ``finish`` does)
    meta: dict = field(default_factory=dict)  # header facts and how greyscale was derived
    frames: int = 1
    reduction: dicom.Reduction | None = None  # where ``pixels`` lie on the full image, if a reduced decode

    @property
    def sha256(self) -> str:
        return sha256_of(self.digest)

    @property
    def shape(self) -> tuple:
        return self.pixels.shape

    @property
    def full_shape(self) -> tuple:
        """(H, W) of the image at full resolution (what results are mapped back onto)."""
        return self.reduction.full_shape if self.reduction else self.pixels.shape[:2]


def read_image(source, *, frame: int | None = None, colour: bool = False,
               min_size: tuple | None = None) -> ImageStudy:
    """Read ``source`` (a path or a 2-D array) into an :class:`ImageStudy`.

    Files are only read, never modified. A multi-frame DICOM (or multi-page TIFF) needs ``frame``.
    ``colour=True`` (tasks whose preprocessing takes RGB, e.g. detection) returns (H, W, 3) RGB
    in [0, 1] instead: colour pictures and 8-bit RGB/YBR DICOM as they are, greyscale studies
    read as above with the grey repeated in the three channels.
    ``min_size`` (H, W): a model needs no more pixels than this; a JPEG 2000 or baseline JPEG DICOM
    is then decoded at the smallest resolution level still at least that large (``reduction`` says
    where its pixels lie on the full image; see io/dicom/pixels.py). Without it, or for other inputs, the full image.
    """
    if colour:
        return _read_colour(source, frame)
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if not isinstance(source, (str, os.PathLike)):
        raise InvalidInputError(f"the study is a {type(source).__name__}", expected="a file path or a 2-D array")
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise InvalidInputError(f"{path} does not exist or is not a file",
                                fix="check the path (folders are opened by the viewer's batch mode)")
    limits.check_file_size(os.path.getsize(path), path)
    with open(path, "rb") as fh:
        head = fh.read(132)
    if head[128:132] == b"DICM" or path.lower().endswith((".dcm", ".dicom")):
        return _from_dicom(path, frame, min_size)
    if path.lower().endswith(IMAGE_SUFFIXES) or head[:8] == b"\x89PNG\r\n\x1a\n" or head[:3] == b"\xff\xd8\xff":
        return _from_picture(path, frame)
    if path.lower().endswith(ECG_SUFFIXES):
        raise InvalidInputError(f"{path} is an ECG record, not an image", expected="a DICOM image, PNG or JPEG",
                                fix="run it through an ECG bundle (task ecg_rhythm, e.g. bundles/ecg-rhythm)")
    raise InvalidInputError(f"{path} is neither DICOM nor a picture (first bytes {head[:8]!r})",
                            expected="a DICOM file, PNG or JPEG",
                            fix="open the study's image file")


def _from_array(arr: np.ndarray) -> ImageStudy:
    if arr.dtype.kind not in "biuf":
        raise InvalidInputError(f"the array has dtype {arr.dtype}", expected="booleans, integers or floats",
                                fix="pass a numeric greyscale array")
    if arr.ndim != 2 or arr.size == 0:
        raise InvalidInputError(f"the array has shape {arr.shape}", expected="a non-empty 2-D greyscale array (H, W)",
                                fix="pass one greyscale frame, e.g. arr[..., 0] or arr.mean(-1)")
    limits.check_pixels(*arr.shape, "<array>")
    if not np.isfinite(arr).all():
        raise InvalidInputError("the array holds NaN or infinite values", expected="finite pixel values")
    values = arr.astype(np.float32)  # one full-size copy; the scaling below works in place
    if arr.dtype == np.uint8:
        values *= np.float32(1 / 255.0)
        pixels, how = values, "uint8/255"
    elif np.issubdtype(arr.dtype, np.floating) and values.min() >= 0 and values.max() <= 1:
        pixels, how = values, "as given (float in [0, 1])"
    else:
        pixels, how = dicom.minmax(values), "min-max"
    digest = hashlib.sha256(np.ascontiguousarray(arr).data).hexdigest()
    return ImageStudy(pixels.astype(np.float32, copy=False), "<array>", "array", digest, {"scaling": how})


@contextmanager
def pillow_errors(path: str):
    """Pillow's refusals of a picture as InvalidInputError (the one boundary for both readers)."""
    from PIL import Image, UnidentifiedImageError

    try:
        yield
    except Image.DecompressionBombError as exc:
        raise InvalidInputError(f"{path} is a decompression bomb ({exc})",
                                expected=f"at most {limits.MAX_FRAME_PIXELS:,} pixels (engine/limits.py)",
                                fix="downsample the image before analysis") from None
    except (UnidentifiedImageError, *PILLOW_ERRORS) as exc:
        raise InvalidInputError(f"{path} could not be decoded as a picture ({type(exc).__name__}: {exc})",
                                fix=PICTURE_FIX) from None


def _from_picture(path: str, frame: int | None) -> ImageStudy:
    from PIL import Image

    with pillow_errors(path), Image.open(path) as img:
        fmt, mode, frames = (img.format or "image").lower(), img.mode, getattr(img, "n_frames", 1)
        limits.check_pixels(img.size[1], img.size[0], path)  # before decoding: the header's size
        _seek(img, frame, frames, path)
        img.load()
        grey, alpha = _canonical(img, path)
    if alpha is not None and alpha.min() < 255:
        raise InvalidInputError(f"{path} ({mode}) has transparent pixels (alpha down to {alpha.min()})",
                                expected="an opaque greyscale image (what it looks like depends on the background)",
                                fix="flatten the image onto its background and save it without transparency")
    pixels, how = _display_grey(grey, path)
    return ImageStudy(pixels, path, fmt, sha256_file(path), {"mode": mode, "greyscale": how}, frames)


def _seek(img, frame: int | None, frames: int, path: str) -> None:
    if frames > 1 and frame is None:
        raise InvalidInputError(f"{path} holds {frames} pages", expected="one page to analyse",
                                fix="choose a page (predict(..., frame=0) or --frame 0)")
    if frame is not None and not 0 <= frame < frames:
        raise InvalidInputError(f"frame {frame} was asked for but {path} has {frames}",
                                expected=f"a frame in 0..{frames - 1}")
    if frame:
        img.seek(frame)


def _canonical(img, path: str) -> tuple:
    """EXIF orientation applied, then one of L, RGB, I;16*, I, F as a numpy array, and the alpha channel if any."""
    from PIL import ImageOps

    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode in ("P", "PA"):  # palette indices are not grey levels: look them up
        img = img.convert("RGBA")
    elif mode == "CMYK":  # Pillow undoes Adobe's inverted CMYK when converting
        img = img.convert("RGB")
    elif mode == "1":
        img = img.convert("L")
    elif mode == "YCbCr":
        img = img.convert("RGB")
    alpha = None
    if img.mode in ("LA", "RGBA"):
        alpha = np.asarray(img.getchannel("A"))
        img = img.convert(img.mode[:-1])
    if img.mode == "RGB":
        rgb = np.asarray(img)
        _check_grey(rgb, path)
        img = img.convert("L")  # ITU-R 601 luma; equal channels keep their value
    if img.mode not in (*SCALE, "I", "F"):
        raise InvalidInputError(f"{path} has picture mode {mode}",
                                expected="greyscale, palette, RGB(A), CMYK, 16-bit, 32-bit or float pixels",
                                fix="save the image as 8- or 16-bit greyscale PNG")
    return (np.asarray(img), img.mode), alpha


def _display_grey(grey: tuple, path: str) -> tuple[np.ndarray, str]:
    arr, mode = grey
    if mode in SCALE:
        return (arr.astype(np.float32) / SCALE[mode]).astype(np.float32), f"{mode} / {SCALE[mode]:g}"
    if mode == "F" and not np.isfinite(arr).all():
        raise InvalidInputError(f"{path} holds {int((~np.isfinite(arr)).sum())} NaN or infinite float pixels",
                                expected="finite pixel values", fix="re-export the image without invalid pixels")
    values = arr.astype(np.float32)
    if mode == "F" and values.min() >= 0 and values.max() <= 1:
        return values, "float as given (in [0, 1])"
    return dicom.minmax(values).astype(np.float32), f"{mode}: min-max (no standard display range)"


def _check_grey(rgb: np.ndarray, where: str) -> None:
    """Accept colour files whose channels are equal (greyscale saved as RGB); refuse real colour."""
    spread = int(np.abs(rgb.astype(np.int16) - rgb[..., :1].astype(np.int16)).max())
    if spread > 2:
        raise InvalidInputError(f"{where} is a colour image (channels differ by up to {spread})",
                                expected="a greyscale radiograph",
                                fix="open the original greyscale image")


def _from_dicom(path: str, frame: int | None, min_size: tuple | None = None) -> ImageStudy:
    with open(path, "rb") as fh:
        data = fh.read()  # read once: hashed for the audit trail and parsed from memory
    digest = _hasher().submit(lambda: hashlib.sha256(data).hexdigest())  # hashlib releases the GIL
    with dicom.parse_errors(path):  # the one boundary for pydicom's own errors on malformed tags
        ds = dicom.read_dataset(path, data)
        shape = dicom.check_header(ds, path)
        if shape.frames > 1 and frame is None:
            raise InvalidInputError(f"{path} holds {shape.frames} frames ((0028,0008) Number of Frames)",
                                    expected="one frame to analyse",
                                    fix="choose a frame (predict(..., frame=0) or --frame 0)")
        if frame is not None and not 0 <= frame < shape.frames:
            raise InvalidInputError(f"frame {frame} was asked for but {path} has {shape.frames}",
                                    expected=f"a frame in 0..{shape.frames - 1}")
        index = frame if shape.frames > 1 else None
        reduced = dicom.reduced_frame(ds, shape.rows, shape.columns, shape.frames, index, min_size, data)
        if reduced is None:
            dicom.load_pixel_data(ds, data)
            arr = dicom.decode_pixels(ds, path, index, shape)
            syntax = getattr(ds.file_meta.get("TransferSyntaxUID"), "name", "pixel data")
            reduced = dicom.reduce_decoded(arr, min_size, syntax)
        arr = reduced.stored if reduced else arr
        pixels, how = dicom.to_display(ds, arr, path)
        meta = dicom.describe(ds) | {"greyscale": how}
        if reduced:
            meta["decoded"] = f"{reduced.how}: {arr.shape[1]} x {arr.shape[0]} of {shape.columns} x {shape.rows}"
    return ImageStudy(pixels, path, "dicom", digest, meta, shape.frames,
                      reduced.reduction if reduced else None)


def sha256_of(digest: str | Future) -> str:
    """A study's sha256, waiting for it if its background hash is still running."""
    return digest if isinstance(digest, str) else digest.result()


_POOL = None
_POOL_LOCK = threading.Lock()


def _hasher():
    """One background thread that hashes input files while they are decoded."""
    global _POOL
    with _POOL_LOCK:  # two first callers at once must not start two pools
        if _POOL is None:
            from concurrent.futures import ThreadPoolExecutor

            _POOL = ThreadPoolExecutor(1, thread_name_prefix="medexport-hash")
        return _POOL


# -- colour: only for tasks whose preprocessing asks for RGB (never for the greyscale models) ------
COLOUR_DICOM = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")
COLOUR_PICTURE = ("RGB", "RGBA", "P", "PA", "L", "LA", "1", "CMYK", "YCbCr")  # Pillow converts these to RGB exactly


def _as_colour(study: ImageStudy) -> ImageStudy:
    """A greyscale study with its grey repeated in R, G and B."""
    rgb = np.repeat(study.pixels[..., None], 3, axis=2)
    return ImageStudy(rgb, study.source, study.kind, study.sha256, study.meta | {"colour": "greyscale repeated"},
                      study.frames)


def _read_colour(source, frame: int | None) -> ImageStudy:
    if isinstance(source, np.ndarray):
        if source.ndim == 3 and source.shape[2] == 3:
            flat = _from_array(source.reshape(source.shape[0], -1))  # same checks and scaling, one 2-D view
            return ImageStudy(flat.pixels.reshape(source.shape), flat.source, flat.kind, flat.sha256,
                              flat.meta | {"colour": "RGB as given"})
        if source.ndim != 2:
            raise InvalidInputError(f"the array has shape {source.shape}", expected="(H, W, 3) RGB or (H, W) greyscale")
        return _as_colour(_from_array(source))
    if not isinstance(source, (str, os.PathLike)) or not os.path.isfile(os.fspath(source)):
        return _as_colour(read_image(source, frame=frame))  # the greyscale reader names the problem
    path = os.fspath(source)
    limits.check_file_size(os.path.getsize(path), path)
    with open(path, "rb") as fh:
        head = fh.read(132)
    if head[128:132] == b"DICM" or path.lower().endswith((".dcm", ".dicom")):
        return _colour_dicom(path, frame)
    return _colour_picture(path, frame)


def _colour_picture(path: str, frame: int | None) -> ImageStudy:
    from PIL import Image, ImageOps

    with pillow_errors(path), Image.open(path) as img:
        fmt, mode, frames = (img.format or "image").lower(), img.mode, getattr(img, "n_frames", 1)
        if mode not in COLOUR_PICTURE:  # 16-bit, 32-bit and float pictures are greyscale
            return _as_colour(read_image(path, frame=frame))
        limits.check_pixels(img.size[1], img.size[0], path)
        _seek(img, frame, frames, path)
        img.load()
        img = ImageOps.exif_transpose(img)
        rgba = img.convert("RGBA")
    arr = np.asarray(rgba)
    if arr[..., 3].min() < 255:
        raise InvalidInputError(f"{path} ({mode}) has transparent pixels (alpha down to {arr[..., 3].min()})",
                                expected="an opaque image (what it looks like depends on the background)",
                                fix="flatten the image onto its background and save it without transparency")
    pixels = arr[..., :3].astype(np.float32) * np.float32(1 / 255.0)
    return ImageStudy(pixels, path, fmt, sha256_file(path), {"mode": mode, "colour": f"{mode} -> RGB / 255"}, frames)


def _colour_dicom(path: str, frame: int | None) -> ImageStudy:
    with open(path, "rb") as fh:
        data = fh.read()
    with dicom.parse_errors(path):
        ds = dicom.read_dataset(path, data)
        photometric = str(ds.get("PhotometricInterpretation", ""))
        if photometric in dicom.GREYSCALE:
            return _as_colour(_from_dicom(path, frame))
        bits, samples = ds.get("BitsAllocated"), ds.get("SamplesPerPixel")
        if photometric not in COLOUR_DICOM or samples != 3 or bits != 8:
            raise InvalidInputError(
                f"{path} has (0028,0004) Photometric Interpretation {photometric or 'missing'}, (0028,0002) Samples "
                f"per Pixel {samples}, (0028,0100) Bits Allocated {bits}",
                expected=f"greyscale, or 8-bit colour with 3 samples ({', '.join(COLOUR_DICOM)})",
                fix="export the image as 8-bit RGB")
        rows = limits.check_count(ds.get("Rows"), "(0028,0010) Rows", 2**16 - 1, path)
        columns = limits.check_count(ds.get("Columns"), "(0028,0011) Columns", 2**16 - 1, path)
        frames = limits.check_count(ds.get("NumberOfFrames", 1) or 1, "(0028,0008) Number of Frames",
                                    limits.MAX_FRAMES, path)
        limits.check_pixels(rows, columns, path, "each frame ((0028,0011) Columns x (0028,0010) Rows)")
        if frames > 1 and frame is None:
            raise InvalidInputError(f"{path} holds {frames} frames ((0028,0008) Number of Frames)",
                                    expected="one frame to analyse", fix="choose a frame (--frame 0)")
        if frame is not None and not 0 <= frame < frames:
            raise InvalidInputError(f"frame {frame} was asked for but {path} has {frames}",
                                    expected=f"a frame in 0..{frames - 1}")
        arr = dicom.decode_pixels(ds, path, frame if frames > 1 else None)  # pydicom converts YBR to RGB
        if arr.shape != (rows, columns, 3):
            raise InvalidInputError(f"{path}: the decoded frame has shape {arr.shape}",
                                    expected=f"({rows}, {columns}, 3) from Rows, Columns and Samples per Pixel")
        meta = dicom.describe(ds) | {"colour": f"{photometric} -> RGB / 255"}
    return ImageStudy(arr.astype(np.float32) * np.float32(1 / 255.0), path, "dicom",
                      hashlib.sha256(data).hexdigest(), meta, frames)


def luma(study: ImageStudy) -> ImageStudy:
    """A colour study as display greyscale (ITU-R 601 luma), for viewers that show grey only."""
    pixels = study.pixels @ np.array([0.299, 0.587, 0.114], np.float32)
    return ImageStudy(pixels.astype(np.float32), study.source, study.kind, study.sha256,
                      study.meta | {"greyscale": "ITU-R 601 luma of the colour image (display only)"}, study.frames)
