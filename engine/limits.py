"""Explicit bounds on what the engine reads, so that no input can exhaust memory or time.

Every reader checks these before decoding wherever the header states the size (DICOM
Rows/Columns/Number of Frames/Bits Allocated, a picture's size, a WFDB or aECG header) and
refuses beyond them with the limit in the message. Together they keep one prediction under
1 GB of resident memory and 10 s of reading and preprocessing (tests/test_input_limits.py).
"""
from __future__ import annotations

import math

from .errors import InvalidInputError

# -- files --------------------------------------------------------------------------------
MAX_FILE_BYTES = 256 * 2**20  # any single input file read into memory (DICOM, picture, WFDB signal)
MAX_TEXT_BYTES = 32 * 2**20  # text formats parsed into Python objects (CSV, HL7 aECG XML)
MAX_ANNOTATION_BYTES = 4 * 2**20  # a WFDB annotation file (about a million beats)

# -- images -------------------------------------------------------------------------------
MAX_FRAME_PIXELS = 40_000_000  # one image or one frame (a 6000 x 6600 radiograph; mammograms are ~21 M)
MAX_FRAME_BYTES = 160 * 2**20  # one decoded frame as stored (pixels x samples x bytes per sample)
MAX_FRAMES = 10_000  # (0028,0008) Number of Frames
MAX_ASPECT_RATIO = 4.0  # longer side / shorter side for whole-image models (centre crops keep the square)
MIN_TILE_FRACTION = 0.5  # tiled models: each side at least this share of a tile (the rest is reflected)
MAX_TILE_PIXELS = 16_777_216  # tiled models: 4096 x 4096 source pixels at most (tiles overlap, memory grows with it)

# -- ECG ----------------------------------------------------------------------------------
SAMPLING_RATE_HZ = (50.0, 20_000.0)  # below 50 Hz a QRS is not resolved; above 20 kHz is not an ECG
MAX_SAMPLES_PER_LEAD = 4_000_000  # e.g. 1 h at 1 kHz
MAX_DURATION_S = 3600.0  # 1 h per lead (beat detection and tokens cost ~2 s per hour at 250 Hz)
MAX_LEADS = 64


def check_count(value, name: str, limit: int, where: str, fix: str = "") -> int:
    """``value`` as an int in 1..limit, else InvalidInputError naming ``name`` and the limit."""
    try:
        number = int(value)
        ok = number == value and 1 <= number <= limit
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise InvalidInputError(f"{where}: {name} is {value!r}", expected=f"a whole number from 1 to {limit:,}",
                                fix=fix or "check that the file is complete and unmodified")
    return number


def check_pixels(height: int, width: int, where: str, what: str = "the image") -> None:
    """Refuse an image or frame larger than :data:`MAX_FRAME_PIXELS` (checked before decoding)."""
    if height * width > MAX_FRAME_PIXELS:
        raise InvalidInputError(f"{where}: {what} is {width} x {height} = {height * width:,} pixels",
                                expected=f"at most {MAX_FRAME_PIXELS:,} pixels per image (engine/limits.py)",
                                fix="downsample the image before analysis")


def check_file_size(size: int, where: str, limit: int = MAX_FILE_BYTES) -> None:
    if size > limit:
        raise InvalidInputError(f"{where} is {size:,} bytes",
                                expected=f"at most {limit:,} bytes for this kind of file (engine/limits.py)",
                                fix="export a single image or a shorter record")


def check_sampling_rate(fs, where: str) -> float:
    """A finite rate within :data:`SAMPLING_RATE_HZ`, else InvalidInputError."""
    low, high = SAMPLING_RATE_HZ
    try:
        rate = float(fs)
    except (TypeError, ValueError, OverflowError):
        rate = float("nan")
    if not low <= rate <= high:  # also false for NaN
        raise InvalidInputError(f"{where}: sampling rate is {fs!r} Hz",
                                expected=f"an ECG sampling rate from {low:g} to {high:g} Hz (engine/limits.py)",
                                fix="check the rate in the file header, or pass the right fs=...")
    return rate


def check_samples(n_samples: int, fs: float, where: str) -> None:
    """Refuse more than :data:`MAX_SAMPLES_PER_LEAD` samples or :data:`MAX_DURATION_S` seconds."""
    if n_samples > MAX_SAMPLES_PER_LEAD or n_samples / fs > MAX_DURATION_S:
        raise InvalidInputError(f"{where}: {n_samples:,} samples per lead at {fs:g} Hz ({n_samples / fs:,.0f} s)",
                                expected=f"at most {MAX_SAMPLES_PER_LEAD:,} samples and {MAX_DURATION_S:,.0f} s "
                                         "per lead (engine/limits.py)",
                                fix="analyse a shorter excerpt of the record")


# -- volumes (engine/io/volume.py) ----------------------------------------------------------
MAX_VOLUME_VOXELS = 512 * 512 * 512  # 134 M voxels: 512 MiB as float32, inside the 1 GB of a prediction
MAX_VOLUME_BYTES = 1 << 30  # the files of one series (or one NIfTI's decompressed data), read into memory
MAX_SERIES_FILES = 4096  # files given as one series (each header is read before any pixel is decoded)


def check_volume(shape: tuple, stored_bytes: int, where: str) -> None:
    """Refuse a volume beyond :data:`MAX_VOLUME_VOXELS` voxels or :data:`MAX_VOLUME_BYTES` stored
    bytes (checked from the headers, before decoding)."""
    voxels = math.prod(int(n) for n in shape)
    if voxels > MAX_VOLUME_VOXELS or stored_bytes > MAX_VOLUME_BYTES:
        raise InvalidInputError(f"{where}: the volume is {' x '.join(map(str, shape))} = {voxels:,} voxels, "
                                f"{stored_bytes:,} bytes",
                                expected=f"at most {MAX_VOLUME_VOXELS:,} voxels and {MAX_VOLUME_BYTES:,} bytes "
                                         "(engine/limits.py)",
                                fix="crop or downsample the volume before analysis")
