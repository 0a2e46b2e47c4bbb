"""Which installed decoder pydicom should use for each transfer syntax, and OpenJPEG's threads.

pydicom tries its plugins in a fixed order, and the first that can decode a syntax is rarely
the fastest. Measured on pydicom-data's RG1 chest film (CR 1955 x 1841, 15 bits) on the 2-core
CI machine, full decode, ms:

| syntax            | chosen                   | pydicom's default          |
|-------------------|--------------------------|----------------------------|
| JPEG baseline     | Pillow (libjpeg-turbo) 9 | pylibjpeg (libjpeg) 42     |
| JPEG 2000         | Pillow (OpenJPEG, 2 threads) 449 | pylibjpeg (OpenJPEG, 1 thread) 618 |
| JPEG-LS           | pyjpegls (CharLS) 161    | pylibjpeg (libjpeg) 497    |
| RLE               | pylibjpeg-rle 26         | pydicom's numpy RLE 301    |

Every syntax here is lossless except baseline JPEG, whose decoders may differ by one grey level
(IDCT rounding). A preferred plugin that is missing, or refuses a file, falls back to pydicom's
own order.
"""
from __future__ import annotations

import os

from .syntaxes import J2K, JPEG_BASELINE, JPEG_LS, RLE

PREFERRED = {JPEG_BASELINE: "pillow", RLE: "pylibjpeg", **{u: "pyjpegls" for u in JPEG_LS},
             **{u: "pillow" for u in J2K}}


def use_all_cores_for_jpeg2000() -> None:
    """OpenJPEG (2.3+) decodes code-blocks on ``OPJ_NUM_THREADS`` threads, read when a decoder is
    created; a site's own setting wins."""
    os.environ.setdefault("OPJ_NUM_THREADS", str(os.cpu_count() or 1))


def preferred_plugin(ds) -> str:
    """The fastest installed pydicom decoding plugin for this dataset, or "" for pydicom's own choice."""
    syntax = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
    name = PREFERRED.get(syntax, "")
    if syntax in J2K:  # Pillow's JPEG 2000 path: unsigned greyscale only (pydicom corrects signed data itself)
        if ds.get("PixelRepresentation", 0) != 0 or ds.get("SamplesPerPixel", 1) != 1:
            return ""
        use_all_cores_for_jpeg2000()
    if not name:
        return ""
    from pydicom.pixels import get_decoder

    return name if name in get_decoder(syntax).available_plugins else ""
