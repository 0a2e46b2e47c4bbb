"""DICOM Structured Report (TID 1500 Measurement Report via highdicom) for a result on a DICOM input.

Qt-free. The SR references the source image (or waveform), records the algorithm (model id,
version, backend, precision, bundle hash) as the observer device, the scores as measurements
and the decision as qualitative evaluations. Written to a new file: never into the input.
"""
from __future__ import annotations

from pathlib import Path

from medexport.engine.atomic import write_new
from medexport.engine.errors import InvalidInputError
from medexport.engine.results import DISCLAIMER

SCHEME = "99MEDEXPORT"  # private coding scheme for model labels
# measurements (result.scores keys) whose name ends so carry a UCUM unit; other scores are unitless
UCUM_BY_SUFFIX = {"_mm": ("mm", "millimeter"), "_weeks": ("wk", "week")}


def build_sr(result, source_path: str):
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    try:
        ds = pydicom.dcmread(source_path)
    except Exception:
        raise InvalidInputError(f"{source_path} is not DICOM: a DICOM SR must reference a DICOM study",
                                fix="save a PDF report instead, or open the DICOM original") from None
    if result.sr_procedure is None:
        raise InvalidInputError("a segmentation result is saved as DICOM SEG, not SR",
                                fix="use File > Save mask (PNG or DICOM SEG)")
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
    measurements = [hd.sr.Measurement(name=hd.sr.CodedConcept(f"{label}-score", SCHEME, f"{label} score"),
                                      value=round(float(score), 6), algorithm_id=algorithm,
                                      unit=next((u for s, u in ucum.items() if label.endswith(s)), unit))
                    for label, score in result.scores.items()]
    finding = hd.sr.CodedConcept("121071", "DCM", "Finding")
    labels = result.finding_labels()
    evaluations = [hd.sr.QualitativeEvaluation(finding, hd.sr.CodedConcept(lab, SCHEME, lab)) for lab in labels]
    if not labels:
        evaluations = [hd.sr.QualitativeEvaluation(finding, hd.sr.CodedConcept("below-threshold", SCHEME,
                                                                                 "No finding at operating threshold"))]
    sources = [hd.sr.SourceImageForMeasurementGroup.from_source_image(ds)] if result.sr_references_image else []
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"medexport {result.model_id}"),
        algorithm_id=algorithm, measurements=measurements, qualitative_evaluations=evaluations,
        source_images=sources or None)
    procedure = hd.sr.CodedConcept(*result.sr_procedure)
    report = hd.sr.MeasurementReport(observation_context=context, procedure_reported=procedure,
                                     imaging_measurements=[group])
    sr = hd.sr.ComprehensiveSR(
        evidence=[ds], content=report[0], series_instance_uid=generate_uid(), series_number=990,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="medexport",
        is_complete=True, is_final=False, is_verified=False)
    sr.SeriesDescription = "medexport AI result - demo, not for diagnosis"[:64]
    sr.ContentLabel = "AIRESULT"
    sr.ContentDescription = DISCLAIMER[:64]
    return sr


def save_sr(result, source_path: str, folder: Path) -> Path:
    """Write the SR as a new file in ``folder`` (never overwriting, never into the input)."""
    import io

    sr = build_sr(result, source_path)
    buf = io.BytesIO()
    sr.save_as(buf, enforce_file_format=True)
    return write_new(Path(folder) / f"{Path(source_path).stem}.{result.model_id}.SR.dcm", buf.getvalue())
