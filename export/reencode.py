"""Real studies re-encoded in a transfer syntax pydicom-data lacks: the build's reduced-decode
check (export/steps/validate.py) and the benchmark's per-syntax rows use the same copies."""
from __future__ import annotations

import numpy as np


def jpeg_baseline_copy(source, dest) -> None:
    """A greyscale DICOM re-encoded as 8-bit baseline JPEG (pydicom has no encoder for it): its
    stored values scaled min-max to 0..255, the window tags dropped, written to ``dest``."""
    import io

    import pydicom
    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    ds = pydicom.dcmread(source)
    arr = ds.pixel_array.astype(np.float32)
    grey = np.round((arr - arr.min()) / (arr.max() - arr.min()) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(grey, "L").save(buf, "JPEG", quality=90)
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    for tag in ("WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept", "VOILUTSequence"):
        ds.pop(tag, None)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.save_as(dest)
