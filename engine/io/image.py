"""Read a study image (DICOM, PNG, JPEG or a numpy array) into display-space greyscale."""
from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field

import numpy as np

from ..checksums import sha256_file
from ..errors import InvalidInputError
from . import dicom

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom", "")


@dataclass(frozen=True)
class ImageStudy:
    """One greyscale frame in [0, 1] (1.0 is white) plus where it came from."""

    pixels: np.ndarray  # float32 (H, W)
    source: str  # a path, or "<array>"
    kind: str  # dicom | png | jpeg | ... | array
    sha256: str  # of the file bytes (or of the array) for the audit log
    meta: dict = field(default_factory=dict)  # header facts and how greyscale was derived
    frames: int = 1

    @property
    def shape(self) -> tuple:
        return self.pixels.shape


def read_image(source, *, frame: int | None = None) -> ImageStudy:
    """Read ``source`` (a path or a 2-D array) into an :class:`ImageStudy`.

    Files are only read, never modified. A multi-frame DICOM needs ``frame``.
    """
    if isinstance(source, np.ndarray):
        return _from_array(source)
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise InvalidInputError(f"{path} does not exist or is not a file",
                                fix="check the path (folders are opened by the viewer's batch mode)")
    with open(path, "rb") as fh:
        head = fh.read(132)
    if head[128:132] == b"DICM" or path.lower().endswith((".dcm", ".dicom")):
        return _from_dicom(path, frame)
    if path.lower().endswith(IMAGE_SUFFIXES) or head[:8] == b"\x89PNG\r\n\x1a\n" or head[:3] == b"\xff\xd8\xff":
        return _from_picture(path)
    raise InvalidInputError(f"{path} is neither DICOM nor a picture (first bytes {head[:8]!r})",
                            expected="a DICOM file, PNG or JPEG",
                            fix="open the study's image file")


def _from_array(arr: np.ndarray) -> ImageStudy:
    if arr.ndim != 2:
        raise InvalidInputError(f"the array has shape {arr.shape}", expected="a 2-D greyscale array (H, W)",
                                fix="pass one greyscale frame, e.g. arr[..., 0] or arr.mean(-1)")
    if not np.isfinite(arr).all():
        raise InvalidInputError("the array holds NaN or infinite values", expected="finite pixel values")
    values = arr.astype(np.float32)
    if arr.dtype == np.uint8:
        pixels, how = values / 255.0, "uint8/255"
    elif np.issubdtype(arr.dtype, np.floating) and values.min() >= 0 and values.max() <= 1:
        pixels, how = values, "as given (float in [0, 1])"
    else:
        pixels, how = dicom.minmax(values), "min-max"
    digest = hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()
    return ImageStudy(pixels.astype(np.float32), "<array>", "array", digest, {"scaling": how})


def _from_picture(path: str) -> ImageStudy:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            mode, fmt = img.mode, (img.format or "image").lower()
            arr = np.asarray(img)
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidInputError(f"{path} could not be decoded as a picture ({exc})",
                                fix="check the file is a complete PNG or JPEG") from None
    if arr.ndim == 3:
        arr = _grey_from_colour(arr[..., :3], path)
    if arr.dtype == np.uint8:
        pixels = arr.astype(np.float32) / 255.0
    elif arr.dtype in (np.uint16, np.int32) and mode.startswith("I"):
        pixels = arr.astype(np.float32) / (65535.0 if arr.max() > 255 else 255.0)
    else:
        pixels = dicom.minmax(arr.astype(np.float32))
    return ImageStudy(pixels, path, fmt, sha256_file(path), {"mode": mode})


def _grey_from_colour(rgb: np.ndarray, where: str) -> np.ndarray:
    """Accept colour files whose channels are equal (greyscale saved as RGB); refuse real colour."""
    spread = np.abs(rgb.astype(np.int32) - rgb[..., :1].astype(np.int32)).max()
    if spread > 2:
        raise InvalidInputError(f"{where} is a colour image (channels differ by up to {spread})",
                                expected="a greyscale radiograph",
                                fix="open the original greyscale image")
    return rgb[..., 0]


def _from_dicom(path: str, frame: int | None) -> ImageStudy:
    with open(path, "rb") as fh:
        data = fh.read()  # read once: hashed for the audit trail and parsed from memory
    digest = _hasher().submit(lambda: hashlib.sha256(data).hexdigest())  # hashlib releases the GIL
    ds = dicom.read_dataset(path, data)
    arr = dicom.decode_pixels(ds, path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        if frame is None:
            raise InvalidInputError(f"{path} holds {frames} frames ((0028,0008) Number of Frames)",
                                    expected="one frame to analyse",
                                    fix="choose a frame (predict(..., frame=0) or --frame 0)")
        if not 0 <= frame < frames:
            raise InvalidInputError(f"frame {frame} was asked for but {path} has {frames}",
                                    expected=f"a frame in 0..{frames - 1}")
        arr = arr[frame]
    pixels, how = dicom.to_display(ds, arr, path)
    meta = dicom.describe(ds) | {"greyscale": how}
    return ImageStudy(pixels, path, "dicom", digest.result(), meta, frames)


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
