"""What a result becomes on the PACS: DICOM SR, DICOM SEG, the overlay as a Secondary Capture and
the report as Encapsulated PDF.

Every object's Series and SOP Instance UIDs are derived from the source's SOP Instance UID, the
bundle's SHA-256 and the object's kind: running the same bundle on the same object again (a
listener restarted after a crash, a user who clicks Send twice) makes the same UIDs, and the PACS
keeps one copy.
"""
from __future__ import annotations

import io
import tempfile
import uuid
from datetime import datetime
from pathlib import Path

from medexport.engine.errors import InvalidInputError
from medexport.engine.header_safe import refusing, safe_header

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
PATIENT_STUDY = ["SpecificCharacterSet", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                 "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID",
                 "AccessionNumber", "StudyDescription"]


UID_NAMESPACE = uuid.UUID("6f1c2a52-8d0e-4f5b-9a7e-3c1d2b4e5f60")  # medexport's results


def derived_uid(source_uid: str, bundle_sha256: str, kind: str, level: str) -> str:
    """A UID that depends only on its inputs: 2.25 + a name-based (SHA-1) UUID as an integer."""
    return f"2.25.{uuid.uuid5(UID_NAMESPACE, '|'.join([source_uid, bundle_sha256, kind, level])).int}"


def restamp(ds, source_uid: str, bundle_sha256: str, kind: str):
    """Give ``ds`` the Series / SOP Instance UIDs derived for (source, bundle, kind)."""
    ds.SeriesInstanceUID = derived_uid(source_uid, bundle_sha256, kind, "series")
    ds.SOPInstanceUID = derived_uid(source_uid, bundle_sha256, kind, "instance")
    if getattr(ds, "file_meta", None) is not None:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _source(source_path: str):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(source_path, stop_before_pixels=True)
    except (InvalidDicomError, OSError) as exc:
        raise InvalidInputError(f"{source_path} cannot be read as DICOM ({exc})",
                                expected="the DICOM object the result was computed on",
                                fix="results go to a PACS only for DICOM studies") from None


def sr_dataset(result, source_path: str, src=None):
    """``src``: the source read without pixels (saves reading it again)."""
    from medexport.engine.sr import build_sr

    src = src if src is not None else _source(source_path)
    sr = build_sr(result, source_path, dataset=src)
    return restamp(sr, str(src.SOPInstanceUID), result.bundle_sha256, "SR")


def seg_dataset(result, source_path: str, src=None):
    import pydicom

    from medexport.engine.outputs import save_dicom_seg

    src = src if src is not None else _source(source_path)
    with tempfile.TemporaryDirectory(prefix="medexport-seg-") as tmp:
        seg = pydicom.dcmread(save_dicom_seg(result, source_path, Path(tmp)))
    return restamp(seg, str(src.SOPInstanceUID), result.bundle_sha256, "SEG")


def pdf_dataset(pdf: bytes, result, source_path: str, title: str = "medexport AI result report", src=None):
    """The PDF report as an Encapsulated PDF object in the source's study."""
    if not pdf.startswith(b"%PDF-"):
        raise InvalidInputError(f"the report to encapsulate starts with {pdf[:8]!r}", expected="a PDF (%PDF-)")
    src = src if src is not None else _source(source_path)
    safe = safe_header(src)  # malformed patient / study values corrected or left empty, never a crash
    with refusing(safe, "Encapsulated PDF"):
        return _pdf_object(pdf, result, safe.dataset, title)


def _pdf_object(pdf: bytes, result, src, title: str):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds = Dataset()
    for key in PATIENT_STUDY:  # safe_header: the type-2 ones are present, every value valid
        if key in src:
            ds[key] = src.data_element(key)
    now = datetime.now()
    ds.SOPClassUID = ENCAPSULATED_PDF
    ds.Modality = "DOC"
    ds.SeriesNumber = 992
    ds.InstanceNumber = 1
    ds.ConversionType = "WSD"
    ds.Manufacturer = "medexport"
    ds.SeriesDescription = "medexport AI report - demo, not for diagnosis"[:64]
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = title[:64]
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = src.SOPClassUID, src.SOPInstanceUID
    ds.SourceInstanceSequence = [ref]
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.EncapsulatedDocument = pdf + (b"\0" if len(pdf) % 2 else b"")
    restamp(ds, str(src.SOPInstanceUID), result.bundle_sha256, "PDF")
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ENCAPSULATED_PDF
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def capture_dataset(result, source_path: str, src=None):
    """The overlay burnt into a Secondary Capture beside the source (engine/overlay_capture.py)."""
    from medexport.engine.overlay_capture import capture_dataset as capture

    src = src if src is not None else _source(source_path)
    return restamp(capture(result, source_path, src), str(src.SOPInstanceUID), result.bundle_sha256, "SC")


def result_objects(result, source_path: str, pdf: bytes | None = None, src=None, overlay: bool = False) -> list:
    """The objects ``result`` sends: SR (scores, findings), SEG (a mask), Encapsulated PDF (when given)
    and, with ``overlay`` (a node's ``send_overlay``), the overlay as a Secondary Capture.

    ``src``: the source already read without pixels."""
    from medexport.engine.overlay_capture import has_overlay

    src = src if src is not None else _source(source_path)
    objects = []
    if result.sr_procedure is not None:
        objects.append(sr_dataset(result, source_path, src))
    if "mask" in result.saves:
        objects.append(seg_dataset(result, source_path, src))
    if overlay and has_overlay(result):
        objects.append(capture_dataset(result, source_path, src))
    if pdf is not None:
        objects.append(pdf_dataset(pdf, result, source_path, src=src))
    return objects


def encode(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
