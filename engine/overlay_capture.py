"""The result's overlay burnt into a DICOM Secondary Capture, so any PACS viewer shows it.

A colour (RGB) copy of the source image with the overlay the viewer draws (heatmap, boxes, mask,
ellipse: engine/overlay_paint.py) composited over it, in the source's study, a new series,
referencing the source image (Source Image Sequence). Patient and study attributes go through
``header_safe``. ECG results have no image overlay: none is made for them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InvalidInputError
from .header_safe import refusing, safe_header
from .io.dicom.syntaxes import EXPLICIT
from .overlay_paint import IMAGE_PAINTERS, burn

OPACITY = {"heatmap": 0.5, "mask": 0.5, "ellipse": 0.5, "boxes": 1.0}  # boxes solid: thin lines
SERIES_NUMBER = 993
SERIES_DESCRIPTION = "medexport AI overlay - demo, not for diagnosis"


def has_overlay(result) -> bool:
    """Whether ``result`` draws over an image (a secondary capture can show it)."""
    overlay = result.overlay()
    return overlay is not None and overlay.kind in IMAGE_PAINTERS


def burnt_pixels(result, source_path: str) -> np.ndarray:
    """(H, W, 3) uint8: the source as displayed (grey repeated in RGB) with the overlay over it."""
    from .io.image import read_image

    overlay = result.overlay()
    rgb = np.rint(np.clip(read_image(source_path, colour=True).pixels, 0, 1) * 255).astype(np.uint8)
    rgba = IMAGE_PAINTERS[overlay.kind](overlay.data, OPACITY.get(overlay.kind, 0.5))
    if rgba.shape[:2] != rgb.shape[:2]:
        raise InvalidInputError(f"the overlay is {rgba.shape[1]} x {rgba.shape[0]} pixels but {source_path} is "
                                f"{rgb.shape[1]} x {rgb.shape[0]}", expected="the result of this very image",
                                fix="run the model on this file again, then send its result")
    return burn(rgb, rgba)


def capture_dataset(result, source_path: str, src=None):
    """The Secondary Capture for ``result`` on ``source_path`` (``src``: its header, already read)."""
    import pydicom

    if not has_overlay(result):
        raise InvalidInputError(f"{result.model_id} draws no overlay over an image",
                                expected="a heatmap, boxes, a mask or an ellipse", fix="send the SR instead")
    if src is None:
        try:
            src = pydicom.dcmread(source_path, stop_before_pixels=True)
        except Exception:
            raise InvalidInputError(f"{source_path} cannot be read as DICOM",
                                    expected="the DICOM image the result was computed on",
                                    fix="save the overlay as PNG for a non-DICOM study") from None
    pixels = burnt_pixels(result, source_path)
    safe = safe_header(src)
    with refusing(safe, "DICOM Secondary Capture"):
        return _capture(result, safe.dataset, pixels)


def _capture(result, ds, pixels: np.ndarray):
    import highdicom as hd
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    sc = hd.sc.SCImage.from_ref_dataset(
        ds, pixels, hd.PhotometricInterpretationValues.RGB, 8, hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=generate_uid(), series_number=SERIES_NUMBER, sop_instance_uid=generate_uid(),
        instance_number=1, manufacturer="medexport", patient_orientation=_orientation(ds) or ("L", "F"),
        transfer_syntax_uid=EXPLICIT)
    if _orientation(ds) is None:  # highdicom wants one; Patient Orientation is type 2: empty = unknown
        sc.PatientOrientation = None
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    sc.SourceImageSequence = [ref]
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.DerivationDescription = f"{result.model_id} {result.model_version}: {result.overlay().note}"[:1024]
    sc.SeriesDescription = SERIES_DESCRIPTION[:64]
    sc.ImageComments = f"{result.headline()}. {result.disclaimer}".strip()[:10240]
    sc.BurnedInAnnotation = "NO"
    return sc


def _orientation(ds) -> tuple[str, str] | None:
    """The source's Patient Orientation where it has two values, else None (left out)."""
    value = ds.get("PatientOrientation")
    parts = list(value) if value is not None and not isinstance(value, str) else str(value or "").split("\\")
    return (parts[0], parts[1]) if len(parts) == 2 and all(parts) else None


def save_capture(result, source_path: str, folder: Path) -> Path:
    """Write the secondary capture as a new file in ``folder`` (never overwriting, never into the input)."""
    from .sr import write_dataset

    return write_dataset(capture_dataset(result, source_path), "DICOM Secondary Capture",
                         Path(folder) / f"{Path(source_path).stem}.{result.model_id}.overlay.dcm")
