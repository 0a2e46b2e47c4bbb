"""The frozen app's self-test of every save path: PDF, DICOM SR, batch CSV, and each result's own
files (heatmap PNG; mask PNG and DICOM SEG), on a small DICOM made here; a volume bundle's DICOM
SEG, SR and PDF report on a small MR series made here. A save path that fails
in the shipped app (a library trimmed away, say) fails the self-test instead of a clinician's click."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from medexport.engine import MedError, open_bundle


def _synthetic_header(sop_class: str, study: str, series: str, frame: str):
    """A new instance of ``sop_class`` with the identifiers an SR / SEG must reference (no real patient)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Selftest^Synthetic", "SELFTEST", "", "O"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "20260101", "120000", "", "", "1"
    return ds


def synthetic_dicom(folder: Path) -> Path:
    """A 256 x 256 16-bit CR with the identifiers an SR / SEG must reference (no real patient)."""
    from pydicom.uid import generate_uid

    ds = _synthetic_header("1.2.840.10008.5.1.4.1.1.1", generate_uid(), generate_uid(), generate_uid())  # CR Image Storage
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.Manufacturer = "CR", 1, 1, "medexport selftest"
    ds.Rows = ds.Columns = 256
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    yy, xx = np.mgrid[:256, :256]
    pixels = (2048 + 1500 * np.sin(xx / 20.0) * np.cos(yy / 30.0)).astype(np.uint16)
    ds.PixelData = pixels.tobytes()
    path = folder / "selftest-cr.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def synthetic_series(folder: Path, slices: int = 24, size: int = 48) -> Path:
    """A small MR series (1 mm voxels, axial) of a bright ellipsoid: what a volume bundle's save
    paths (DICOM SEG, SR, the PDF report) need to reference; no real patient."""
    from pydicom.uid import generate_uid

    series = folder / "selftest-mr-series"
    series.mkdir()
    study, uid, frame = generate_uid(), generate_uid(), generate_uid()
    zz, yy, xx = np.mgrid[:slices, :size, :size]
    blob = ((zz - slices / 2) / (slices / 3)) ** 2 + ((yy - size / 2) / (size / 4)) ** 2 + ((xx - size / 2) / (size / 6)) ** 2
    voxels = (200 + 600 * (blob < 1) + 40 * np.sin(xx / 3.0)).astype(np.uint16)
    for k in range(slices):
        ds = _synthetic_header("1.2.840.10008.5.1.4.1.1.4", study, uid, frame)  # MR Image Storage
        ds.Modality, ds.BodyPartExamined, ds.SeriesNumber, ds.InstanceNumber = "MR", "HEAD", 1, k + 1
        ds.Manufacturer = "medexport selftest"
        ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 0, 0, 0, 1, 0], [0, 0, float(k)]
        ds.PixelSpacing, ds.SliceThickness = [1, 1], 1
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = voxels[k].tobytes()
        ds.save_as(series / f"slice{k:03d}.dcm", enforce_file_format=True)
    return series


def save_paths_work(bundles, open_options: dict) -> list[str]:
    """PASS / FAIL lines, one per save path exercised."""
    from medexport.engine.studies import batch_row, study_for, write_batch_csv

    lines = []
    with tempfile.TemporaryDirectory(prefix="medexport-selftest-") as tmp:
        folder = Path(tmp)
        source = synthetic_dicom(folder)
        study = study_for(source)
        rows = []
        for entry in bundles:
            if entry.study_kind == "volume":
                lines += _volume_saves(entry, open_options, folder)
            if entry.study_kind != "image":
                continue
            try:
                with open_bundle(entry.path, **open_options) as model:
                    result = model.predict(str(source))
            except MedError as exc:
                lines.append(f"FAIL {entry.model_id} on a synthetic DICOM: {exc}")
                continue
            rows.append(batch_row(study, result, None))
            checks = [(f"{entry.model_id} {kind}", lambda r=result: r.save_outputs(folder, str(source)))
                      for kind in result.saves]
            if result.sr_procedure is not None:
                checks.append((f"{entry.model_id} DICOM SR", lambda r=result: _sr(r, source, folder)))
            checks.append((f"{entry.model_id} PDF report", lambda r=result: _pdf(study, r, folder, entry)))
            lines += [_attempt(name, fn) for name, fn in checks]
        if rows:
            lines.append(_attempt("batch CSV", lambda: write_batch_csv(rows, folder / "batch.csv")))
    return lines


def _volume_saves(entry, open_options: dict, folder: Path) -> list[str]:
    """A volume bundle on a synthetic series: its DICOM SEG, SR and PDF report (``save_outputs``)."""
    series = synthetic_series(Path(tempfile.mkdtemp(dir=folder)))
    try:
        with open_bundle(entry.path, **open_options) as model:
            result = model.predict(str(series))
    except MedError as exc:
        return [f"FAIL {entry.model_id} on a synthetic MR series: {exc}"]
    out = folder / f"{entry.model_id}-outputs"
    out.mkdir()
    return [_attempt(f"{entry.model_id} DICOM SEG, SR and PDF report", lambda: result.save_outputs(out, str(series)))]


def _attempt(name: str, save) -> str:
    try:
        written = save()
    except Exception as exc:  # the point of this check: any failure of a save path, named, not raised
        return f"FAIL save {name}: {type(exc).__name__}: {exc}"
    files = written.values() if isinstance(written, dict) else [written]
    empty = [str(f) for f in files if not Path(f).is_file() or Path(f).stat().st_size == 0]
    return f"FAIL save {name}: wrote nothing ({', '.join(empty)})" if empty or not files else f"PASS save {name}"


def _sr(result, source: Path, folder: Path):
    from medexport.engine.sr import save_sr

    return save_sr(result, str(source), folder)


def _pdf(study, result, folder: Path, entry):
    from PySide6.QtGui import QGuiApplication

    from .qt_report import save_pdf

    app = QGuiApplication.instance() or QGuiApplication(["medexport-selftest"])  # noqa: F841 (kept alive)
    return save_pdf(folder / "report.pdf", study, result, entry.intended_use)
