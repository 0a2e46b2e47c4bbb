"""Write results next to nothing the user did not choose: mask PNGs, heatmap PNGs, DICOM SEG.

Files are published complete (``atomic.write_new``) into a folder the caller names, never over
an existing file (``name (2).png`` ...) and never into the input's folder unless that is the folder given.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .atomic import write_new
from .errors import BackendUnavailableError, InvalidInputError
from .header_safe import refusing, safe_header


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def save_mask_png(result, folder: Path) -> Path:
    """The mask as an 8-bit PNG (255 = inside), same size as the input."""
    name = f"{Path(result.source).stem}.{result.model_id}.mask.png"
    return write_new(Path(folder) / name, _png(result.mask.astype(np.uint8) * 255))


def save_heatmap_png(result, folder: Path) -> Path:
    """The class activation map as an 8-bit PNG on the input's grid (where the model looked)."""
    if result.heatmap is None:
        raise InvalidInputError(f"{result.model_id} gave no heatmap for {result.source}",
                                fix="use a bundle whose model outputs class activation maps, or --explain")
    name = f"{Path(result.source).stem}.{result.model_id}.heatmap.png"
    return write_new(Path(folder) / name, _png((result.heatmap * 255).astype(np.uint8)))


# result class name -> its writer in engine/volume_outputs.py: a SEG of a whole series, not of one image
SERIES_SEG = {"VolumeSegmentationResult": "save_volume_seg"}


def save_dicom_seg(result, source_path: str, folder: Path) -> Path:
    """A binary DICOM Segmentation (highdicom) referencing the source image.

    Projection images (CR/DX) have no frame of reference; highdicom then needs no plane
    positions and the SEG references the image itself. The source's patient and study
    attributes go through ``header_safe`` (malformed ones corrected or left empty, never a crash).
    A volume's SEG references each slice of its series (``source_path``: the series' folder or files).
    """
    series = next((SERIES_SEG[k.__name__] for k in type(result).__mro__ if k.__name__ in SERIES_SEG), None)
    if series is not None:
        from . import volume_outputs

        return getattr(volume_outputs, series)(result, source_path, folder)
    try:
        import highdicom  # noqa: F401
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError:
        raise BackendUnavailableError("writing DICOM SEG needs highdicom", fix="pip install 'medexport[desktop]'") from None
    try:
        safe = safe_header(pydicom.dcmread(source_path))
    except (InvalidDicomError, OSError) as exc:
        raise InvalidInputError(f"{source_path} cannot be read as DICOM ({type(exc).__name__})",
                                expected="the DICOM image the mask was computed on",
                                fix="save the mask as PNG for a non-DICOM study") from None
    with refusing(safe, "DICOM SEG"):
        data = _seg_bytes(result, safe.dataset)
    name = f"{Path(source_path).stem}.{result.model_id}.SEG.dcm"
    return write_new(Path(folder) / name, data)


def _seg_bytes(result, ds) -> bytes:
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    description = hd.seg.SegmentDescription(
        segment_number=1, segment_label=result.label,
        segmented_property_category=codes.SCT.Tissue, segmented_property_type=codes.SCT.Tissue,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=result.model_id, version=result.model_version, family=codes.cid7162.ArtificialIntelligence,
            parameters={"backend": result.backend, "precision": result.precision}))
    seg = hd.seg.Segmentation(
        source_images=[ds], pixel_array=result.mask[None].astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[description],
        series_instance_uid=generate_uid(), series_number=991, sop_instance_uid=generate_uid(), instance_number=1,
        manufacturer="medexport", manufacturer_model_name=result.model_id, software_versions=result.model_version,
        device_serial_number=result.bundle_sha256[:16], omit_empty_frames=False)
    seg.SeriesDescription = "medexport segmentation - demo, not for diagnosis"[:64]
    buf = io.BytesIO()
    seg.save_as(buf)
    return buf.getvalue()
