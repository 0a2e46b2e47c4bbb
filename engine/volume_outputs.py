"""What a volume result writes: DICOM SEG (one segment per label, each frame referencing its source
slice), DICOM SR (TID 1500, volumes in mL, engine/sr.py), the PDF report with three orthogonal
slices (engine/volume_report.py); for a NIfTI source a NIfTI label map instead of SEG and SR.

The source is read again (``read_volume``) and must be the volume the result was computed on
(the same SHA-256 over its files); the slices' headers are matched to the result's slices by
(0008,0018) SOP Instance UID. Files are published complete (``atomic.write_new``), never over an
existing one, into the folder the caller names.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from . import codes as c
from .atomic import write_new
from .errors import BackendUnavailableError, InvalidInputError
from .header_safe import refusing, safe_header

SEG_NEEDS_DICOM = "DICOM SEG and SR need a DICOM source (a series); this volume is NIfTI: its labels were saved as NIfTI"


def source_volume(result, source):
    """The volume ``result`` was computed on, read again from ``source`` (refused if it changed)."""
    from .io.volume import read_volume

    study = read_volume(source)
    if study.digest != result.input_sha256 or study.shape != result.mask.shape:
        raise InvalidInputError(f"{source} is not the volume this result was computed on (SHA-256 "
                                f"{study.digest[:12]}..., shape {study.shape})",
                                expected=f"SHA-256 {result.input_sha256[:12]}..., shape {result.mask.shape}",
                                fix="save the outputs from the same files the model read (they changed since)")
    return study


def series_headers(study) -> list:
    """The headers (no pixels) of a DICOM volume's files: one per slice in slice order for a classic
    series, the one file for an enhanced multi-frame volume."""
    import pydicom

    files = list(dict.fromkeys(study.files))
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    uids = tuple(str(ds.get("SOPInstanceUID", "")) for ds in headers)
    expected = tuple(dict.fromkeys(study.slice_uids))
    if uids != expected:
        raise InvalidInputError(f"the files of {study.source} hold (0008,0018) SOP Instance UIDs that differ from the "
                                "slices the volume was read from", expected="each slice's file, unchanged",
                                fix="save the outputs from the same files the model read")
    return headers


def _segment_descriptions(result) -> list:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name=result.model_id, version=result.model_version, family=codes.cid7162.ArtificialIntelligence,
        parameters={"backend": result.backend, "precision": result.precision})
    out = []
    for i, label in enumerate(result.labels, start=1):
        structure = c.code_for(result.label_codes, label)
        description = hd.seg.SegmentDescription(
            segment_number=i, segment_label=f"{label} {structure[2].lower()}"[:64],
            segmented_property_category=hd.sr.CodedConcept(*c.ANATOMICAL_STRUCTURE),
            segmented_property_type=hd.sr.CodedConcept(*structure),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm)
        modifier = c.PART_MODIFIERS.get(label)
        if modifier is not None:  # (0062,0011) Segmented Property Type Modifier Code Sequence
            description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
                hd.sr.CodedConcept(*modifier)]
        out.append(description)
    return out


def seg_dataset(result, study, headers):
    """A binary DICOM Segmentation (highdicom): one segment per label, one frame per slice and
    segment (empty frames kept: every slice is referenced), each frame's Derivation Image /
    Source Image referencing its slice; patient and study from the first slice (``header_safe``)."""
    try:
        import highdicom as hd
        from pydicom.uid import generate_uid
    except ImportError:
        raise BackendUnavailableError("writing DICOM SEG needs highdicom", fix="pip install 'medexport[desktop]'") from None
    safe = [safe_header(ds) for ds in headers]
    mask = result.mask
    if len(headers) == 1 and len(study.frames) == len(mask):  # enhanced: frames in the file's order
        ordered = np.empty_like(mask)
        ordered[np.asarray(study.frames) - 1] = mask
        mask = ordered
    with refusing(safe[0], "DICOM SEG"):
        seg = hd.seg.Segmentation(
            source_images=[s.dataset for s in safe], pixel_array=mask,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=_segment_descriptions(result),
            series_instance_uid=generate_uid(), series_number=991, sop_instance_uid=generate_uid(), instance_number=1,
            manufacturer="medexport", manufacturer_model_name=result.model_id, software_versions=result.model_version,
            device_serial_number=result.bundle_sha256[:16], omit_empty_frames=False)
    seg.SeriesDescription = "medexport segmentation" + (" - demo, not for diagnosis" if result.disclaimer else "")
    return seg


def save_volume_seg(result, source, folder: Path) -> Path:
    """The SEG of a volume result on a DICOM series as a new file in ``folder`` (NIfTI: refused)."""
    study = source_volume(result, source)
    if study.kind == "nifti":
        raise InvalidInputError(f"{source} is NIfTI: a DICOM SEG must reference a DICOM series",
                                fix="save the labels as NIfTI (predict --out), or open the DICOM series")
    return write_new(Path(folder) / f"{_stem(_first(source))}.{result.model_id}.SEG.dcm",
                     _encoded(seg_dataset(result, study, series_headers(study))))


def _encoded(ds) -> bytes:
    buf = io.BytesIO()
    with refusing(None, "DICOM object"):
        ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def label_nifti(result, source: str) -> bytes:
    """The labels as a NIfTI (uint8, the source's affine and header geometry), gzip-compressed."""
    import gzip

    import nibabel

    image = nibabel.load(source)
    out = nibabel.Nifti1Image(result.mask, image.affine, header=image.header)
    out.set_data_dtype(np.uint8)
    out.header["scl_slope"], out.header["scl_inter"] = 1, 0
    out.header["cal_min"], out.header["cal_max"] = 0, len(result.labels)
    out.header["descrip"] = f"{result.model_id} {result.model_version} labels"[:79].encode()
    return gzip.compress(out.to_bytes(), mtime=0)


def _stem(source: str) -> str:
    name = Path(source).name
    for suffix in (".nii.gz", ".nii", ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _first(source) -> str:
    return str(source if isinstance(source, (str, Path)) else source[0])


def report(result, study, headers=None, intended_use: str = "", by: str = "command line") -> bytes:
    """The PDF report (engine/volume_report.py) of ``result`` on ``study`` (``source_volume``);
    ``headers``: its slices' headers for a DICOM series (patient and study lines)."""
    from .volume_report import report_pdf

    shape = " x ".join(map(str, study.shape))
    if headers:
        lines = (f"Series UID: {study.meta.get('SeriesInstanceUID', '-')} ({len(study.slice_uids)} slices, "
                 f"{shape} voxels)",)
    else:
        lines = (f"Source: NIfTI {Path(study.source).name} ({shape} voxels)",)
    return report_pdf(result, study.voxels, headers[0] if headers else {}, intended_use, by=by, source_lines=lines)


def report_for_source(result, source, intended_use: str = "", by: str = "command line") -> bytes:
    """The PDF report of ``result``, its volume read again from ``source`` (a series or a NIfTI)."""
    study = source_volume(result, source)
    return report(result, study, series_headers(study) if study.kind != "nifti" else None, intended_use, by)


def save_volume_outputs(result, folder: Path, source, intended_use: str = "") -> dict:
    """Write SEG + SR (DICOM) or the label NIfTI, and the PDF report, into ``folder``; returns
    {"mask_file", "sr_file", "report_file"} (NIfTI: "seg_note" says why there is no SEG / SR)."""
    from .sr import build_volume_sr, write_dataset

    study = source_volume(result, source)
    folder, stem = Path(folder), f"{_stem(_first(source))}.{result.model_id}"
    out, headers = {}, None
    if study.kind == "nifti":
        out["mask_file"] = write_new(folder / f"{stem}.labels.nii.gz", label_nifti(result, study.source))
        out["seg_note"] = SEG_NEEDS_DICOM
    else:
        headers = series_headers(study)
        seg = seg_dataset(result, study, headers)
        out["mask_file"] = write_new(folder / f"{stem}.SEG.dcm", _encoded(seg))
        out["sr_file"] = write_dataset(build_volume_sr(result, headers, seg), "DICOM SR", folder / f"{stem}.SR.dcm")
    out["report_file"] = write_new(folder / f"{stem}.report.pdf", report(result, study, headers, intended_use))
    return out
