"""DICOM Structured Report (TID 1500 Measurement Report via highdicom) for a result on a DICOM input.

Qt-free. The SR references the source image (or waveform), records the algorithm (model id,
version, backend, precision, bundle hash) as the observer device, the scores as measurements
and the decision as qualitative evaluations. Written to a new file: never into the input.
"""
from __future__ import annotations

from pathlib import Path

from .atomic import write_new
from .codes import PRIVATE_SCHEME, code_for
from .errors import InvalidInputError
from .header_safe import refusing, safe_header
from .results import DISCLAIMER

# measurements (result.scores keys) whose name ends so carry a UCUM unit; other scores are unitless
UCUM_BY_SUFFIX = {"_mm": ("mm", "millimeter"), "_weeks": ("wk", "week")}


def warning_items(result, header_notes=()) -> list:
    """The result's warnings as coded qualitative evaluations: concept 'medexport warning', value
    the stable code with its message (cut to the 64 characters a code meaning may hold); then what
    was corrected or left out of the source's header (``header_safe``), as 'header_corrected'."""
    import highdicom as hd

    concept = hd.sr.CodedConcept("warning", PRIVATE_SCHEME, "medexport warning")
    pairs = [(w.code, w.message) for w in result.warnings] + [("header_corrected", n) for n in header_notes]
    return [hd.sr.QualitativeEvaluation(concept, hd.sr.CodedConcept(code, PRIVATE_SCHEME, message[:64]))
            for code, message in pairs]


def build_sr(result, source_path: str, dataset=None):
    """The SR for ``result`` on the DICOM file ``source_path`` (``dataset``: that file already read).

    The source's patient and study attributes go through ``header_safe``: a malformed or absent
    one is corrected or left empty and named in a 'header_corrected' item, never a crash."""
    import pydicom

    try:
        ds = dataset if dataset is not None else pydicom.dcmread(source_path, stop_before_pixels=True)
    except Exception:
        raise InvalidInputError(f"{source_path} is not DICOM: a DICOM SR must reference a DICOM study",
                                fix="save a PDF report instead, or open the DICOM original") from None
    if result.sr_procedure is None:
        raise InvalidInputError("a segmentation result is saved as DICOM SEG, not SR",
                                fix="use File > Save mask (PNG or DICOM SEG)")
    safe = safe_header(ds)
    with refusing(safe, "DICOM SR"):
        return _build(result, safe)


def _build(result, safe):
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    ds = safe.dataset
    algorithm = hd.sr.AlgorithmIdentification(
        name=result.model_id, version=result.model_version,
        parameters=[f"backend={result.backend}", f"precision={result.precision}",
                    f"bundle_sha256={result.bundle_sha256}"], manufacturer="medexport")
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name="medexport", manufacturer_name="medexport", model_name=result.model_id))
    context = hd.sr.ObservationContext(observer_device_context=device)
    unit = hd.sr.CodedConcept("1", "UCUM", "no units")
    ucum = {suffix: hd.sr.CodedConcept(code, "UCUM", meaning) for suffix, (code, meaning) in UCUM_BY_SUFFIX.items()}
    measurements = [hd.sr.Measurement(name=hd.sr.CodedConcept(f"{label}-score", PRIVATE_SCHEME, f"{label} score"),
                                      value=round(float(score), 6), algorithm_id=algorithm,
                                      unit=next((u for s, u in ucum.items() if label.endswith(s)), unit))
                    for label, score in result.scores.items()]
    finding = hd.sr.CodedConcept("121071", "DCM", "Finding")
    labels = result.finding_labels()
    # standard codes (SNOMED CT) where the label has one; the private scheme only as a fallback
    evaluations = [hd.sr.QualitativeEvaluation(finding, hd.sr.CodedConcept(*code_for(result.label_codes, lab)))
                   for lab in labels]
    if not labels:
        evaluations = [hd.sr.QualitativeEvaluation(finding, hd.sr.CodedConcept("below-threshold", PRIVATE_SCHEME,
                                                                                 "No finding at operating threshold"))]
    sources = [hd.sr.SourceImageForMeasurementGroup.from_source_image(ds)] if result.sr_references_image else []
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"medexport {result.model_id}"),
        algorithm_id=algorithm, measurements=measurements,
        qualitative_evaluations=evaluations + warning_items(result, safe.notes),
        source_images=sources or None)
    overlay = result.overlay()
    regions = REGION_WRITERS[overlay.kind](overlay.data, ds, algorithm, unit, result.label_codes) \
        if overlay is not None and overlay.kind in REGION_WRITERS else []
    procedure = hd.sr.CodedConcept(*result.sr_procedure)
    report = hd.sr.MeasurementReport(observation_context=context, procedure_reported=procedure,
                                     imaging_measurements=[group, *regions])
    sr = hd.sr.ComprehensiveSR(
        evidence=[ds], content=report[0], series_instance_uid=generate_uid(), series_number=990,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="medexport",
        is_complete=True, is_final=False, is_verified=False)
    sr.SeriesDescription = "medexport AI result - demo, not for diagnosis"[:64]
    sr.ContentLabel = "AIRESULT"
    sr.ContentDescription = DISCLAIMER[:64]
    return sr


def box_regions(data: tuple, ds, algorithm, unit, label_codes: dict) -> list:
    """One planar ROI group (TID 1410) per detected box: a closed SCOORD POLYLINE in the source
    image's pixel coordinates, its label as the finding type and its score as a measurement."""
    import highdicom as hd
    import numpy as np
    from pydicom.uid import generate_uid

    source = hd.sr.SourceImageForRegion.from_source_image(ds)
    groups = []
    for i, d in enumerate(data[0]):
        x0, y0, x1, y1 = d.box
        outline = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], np.float32)
        score = hd.sr.Measurement(name=hd.sr.CodedConcept(f"{d.label}-score", PRIVATE_SCHEME, f"{d.label} box score"),
                                  value=round(float(d.score), 4), unit=unit, algorithm_id=algorithm)
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"{d.label} {i + 1}"),
            referenced_region=hd.sr.ImageRegion(hd.sr.GraphicTypeValues.POLYLINE, outline, source),
            finding_type=hd.sr.CodedConcept(*code_for(label_codes, d.label)), algorithm_id=algorithm,
            measurements=[score]))
    return groups


# overlay kinds whose regions an SR records as SCOORD (results.Overlay.kind -> writer)
REGION_WRITERS = {"boxes": box_regions}


def save_sr(result, source_path: str, folder: Path) -> Path:
    """Write the SR as a new file in ``folder`` (never overwriting, never into the input)."""
    import io

    sr = build_sr(result, source_path)
    buf = io.BytesIO()
    with refusing(None, "DICOM SR"):
        sr.save_as(buf, enforce_file_format=True)
    return write_new(Path(folder) / f"{Path(source_path).stem}.{result.model_id}.SR.dcm", buf.getvalue())
