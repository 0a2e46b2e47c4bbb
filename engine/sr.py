"""DICOM Structured Report (TID 1500 Measurement Report via highdicom) for a result on a DICOM input.

Qt-free. The SR references the source image (or waveform), records the algorithm (model id,
version, backend, precision, bundle hash) as the observer device, and in one measurement group:
each score with its operating threshold, the task's own measurements in standard codes (fetal
biometry in LOINC, the ECG's heart rate, RR statistics and deciding leads), the finding, and every
warning both as a code and in words (a TEXT item: never cut). A flagged study's finding is 'Not
Evaluated', with the model's answer kept apart as unvouched. Detections add one group per label
(its count) and one region per box. Written to a new file: never into the input.
"""
from __future__ import annotations

from pathlib import Path

from . import codes as c
from .atomic import write_new
from .cautions import NOT_ASSESSED
from .errors import InvalidInputError
from .header_safe import refusing, safe_header


def _code(code: tuple):
    import highdicom as hd

    return hd.sr.CodedConcept(*code)


def _private(value: str, meaning: str):
    return _code((value, c.PRIVATE_SCHEME, meaning))


def _number(name: tuple, value: float, unit: tuple, algorithm, **extra):
    import highdicom as hd

    return hd.sr.Measurement(name=_code(name), value=round(float(value), 6), unit=_code(unit),
                             algorithm_id=algorithm, **extra)


def _evaluation(name: tuple, value: tuple):
    import highdicom as hd

    return hd.sr.QualitativeEvaluation(_code(name), _code(value))


def finding_items(result) -> list:
    """'Finding' = each finding label's code; for a flagged study (``result.not_assessed``) the
    finding is 'Not Evaluated', the model's own answer an unvouched item and each flag a reason."""
    labels = list(dict.fromkeys(c.code_for(result.label_codes, lab) for lab in result.finding_labels()))  # each code once
    if not result.not_assessed:
        return [_evaluation(c.FINDING, code) for code in labels] or [
            _evaluation(c.FINDING, ("below-threshold", c.PRIVATE_SCHEME, "No finding at operating threshold"))]
    unvouched = ("unvouched-answer", c.PRIVATE_SCHEME, "Model answer, not vouched for")
    because = ("not-assessed-because", c.PRIVATE_SCHEME, "Not assessed because")
    return ([_evaluation(c.FINDING, c.NOT_EVALUATED)] + [_evaluation(unvouched, code) for code in labels]
            + [_evaluation(because, (flag, c.PRIVATE_SCHEME, NOT_ASSESSED[flag])) for flag in result.not_assessed])


def warnings(result, header_notes=()) -> list[tuple[str, str]]:
    """(code, message) for each warning, then what ``header_safe`` corrected or left out."""
    return [(w.code, w.message) for w in result.warnings] + [("header_corrected", n) for n in header_notes]


def warning_items(pairs) -> list:
    """Each warning as a coded qualitative evaluation ('medexport warning' = its stable code)."""
    concept = ("warning", c.PRIVATE_SCHEME, "medexport warning")
    return [_evaluation(concept, (code, c.PRIVATE_SCHEME, code)) for code, _ in pairs]


def text_items(texts) -> list:
    """'Comment' TEXT items: a warning in words, whole (a code meaning would hold 64 characters)."""
    import highdicom as hd

    return [hd.sr.TextContentItem(name=_code(c.COMMENT), value=text,
                                  relationship_type=hd.sr.RelationshipTypeValues.CONTAINS) for text in texts]


def score_content(result, algorithm) -> tuple[list, list, list]:
    """Scores with their operating thresholds (unitless): (measurements, evaluations, texts)."""
    out = []
    for row in result.score_rows():
        out.append(_number((f"{row.label}-score", c.PRIVATE_SCHEME, f"{row.label} score"), row.score, c.NO_UNITS, algorithm))
        if row.threshold is not None:
            out.append(_number((f"{row.label}-threshold", c.PRIVATE_SCHEME, f"{row.label} operating threshold"),
                               row.threshold, c.NO_UNITS, algorithm))
    return out, [], []


def fetal_content(result, algorithm) -> tuple[list, list, list]:
    """HC, BPD, OFD (LOINC, CID 12005) in mm (pixels without a pixel spacing) and the gestational
    age (LOINC 18185-9, in weeks, method 'HC, Hadlock 1984'); the mask's share of the image."""
    out = []
    for key, value in result.measurements.items():
        if value is None:  # outside its formula's range: the warning says so
            continue
        name = next((code for prefix, code in c.FETAL_BIOMETRY.items() if key.startswith(prefix)), None)
        unit = next((u for suffix, u in c.UNITS.items() if key.endswith(suffix)), c.NO_UNITS)
        name = name or (key, c.PRIVATE_SCHEME, key)
        extra = {"method": _code(c.GA_BY_HC_HADLOCK)} if name == c.FETAL_BIOMETRY["gestational_age"] else {}
        out.append(_number(name, value, unit, algorithm, **extra))
    share = f"{result.label}_fraction"
    out.append(_number((share, c.PRIVATE_SCHEME, f"{result.label} share of the image"), result.scores[share],
                       c.NO_UNITS, algorithm))
    return out, [], []


def ecg_content(result, algorithm) -> tuple[list, list, list]:
    """Heart rate (LOINC 8867-4, beats/min), the RR statistics, each rhythm's score, and the
    deciding leads as 'Lead ID' = the lead's MDC code (CID 3001)."""
    stats = result.stats
    out = [_number(c.HEART_RATE, stats["heart_rate_bpm"], c.BEATS_PER_MINUTE, algorithm)] \
        if stats.get("heart_rate_bpm") is not None else []
    out += [_number((key, c.PRIVATE_SCHEME, meaning), stats[key], c.NO_UNITS, algorithm)
            for key, meaning in c.RR_STATISTICS.items() if stats.get(key) is not None]
    out += score_content(result, algorithm)[0]
    leads = result.leads or (result.lead,)
    evaluations = [_evaluation(c.LEAD_ID, c.code_for(c.ECG_LEADS, str(lead))) for lead in leads]
    texts = [f"decided by lead{'s' if len(leads) > 1 else ''} {', '.join(map(str, leads))}"
             + (f" ({result.lead_choice})" if result.lead_choice else "")]
    return out, evaluations, texts


def detection_groups(result, algorithm, sources) -> list:
    """One group per label the model knows: its count ('Number of similar findings'), mean box
    score and operating threshold, the label's code as the finding type."""
    import highdicom as hd
    from pydicom.uid import generate_uid

    groups = []
    for label, count in result.counts.items():
        items = [_number(c.NUMBER_OF_SIMILAR_FINDINGS, count, c.NO_UNITS, algorithm),
                 _number((f"{label}-score", c.PRIVATE_SCHEME, f"{label} mean box score"), result.scores[label],
                         c.NO_UNITS, algorithm)]
        if label in result.thresholds:
            items.append(_number((f"{label}-threshold", c.PRIVATE_SCHEME, f"{label} operating threshold"),
                                 result.thresholds[label], c.NO_UNITS, algorithm))
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"{label} count"),
            finding_type=_code(c.code_for(result.label_codes, label)), algorithm_id=algorithm,
            measurements=items, source_images=sources or None))
    return groups


def no_content(result, algorithm) -> tuple[list, list, list]:
    return [], [], []


# result class name -> what its main group records; others: scores with thresholds
CONTENT_WRITERS = {"FetalHeadResult": fetal_content, "EcgRhythmResult": ecg_content, "DetectionResult": no_content}
# result class name -> further groups
GROUP_WRITERS = {"DetectionResult": detection_groups}


def _writer(table: dict, result, default=None):
    return next((table[k.__name__] for k in type(result).__mro__ if k.__name__ in table), default)


def build_sr(result, source_path: str, dataset=None):
    """The SR for ``result`` on the DICOM file ``source_path`` (``dataset``: that file already read).

    The source's patient and study attributes go through ``header_safe``: a malformed or absent
    one is corrected or left empty and named in a 'header_corrected' item, never a crash."""
    import pydicom

    from_source = _writer(SOURCE_READERS, result)
    if from_source is not None:  # a volume: a series folder or its files, not one object
        return from_source(result, source_path)
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


def _algorithm(result):
    import highdicom as hd

    return hd.sr.AlgorithmIdentification(
        name=result.model_id, version=result.model_version,
        parameters=[f"backend={result.backend}", f"precision={result.precision}",
                    f"bundle_sha256={result.bundle_sha256}"], manufacturer="medexport")


def _context(result):
    """The algorithm as the observer device."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name="medexport", manufacturer_name="medexport", model_name=result.model_id))
    return hd.sr.ObservationContext(observer_device_context=device)


def _document(result, report, evidence: list):
    """The Comprehensive SR holding ``report``, stamped with the disclaimer."""
    import highdicom as hd
    from pydicom.uid import generate_uid

    sr = hd.sr.ComprehensiveSR(
        evidence=evidence, content=report[0], series_instance_uid=generate_uid(), series_number=990,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="medexport",
        is_complete=True, is_final=False, is_verified=False)
    sr.SeriesDescription = "medexport AI result" + (" - not for diagnosis" if result.disclaimer else "")
    sr.ContentLabel = "AIRESULT"
    sr.ContentDescription = (result.disclaimer or f"{result.model_id} {result.model_version}")[:64]
    return sr


def _build(result, safe):
    import highdicom as hd
    from pydicom.uid import generate_uid

    ds = safe.dataset
    algorithm = _algorithm(result)
    context = _context(result)
    measurements, evaluations, texts = _writer(CONTENT_WRITERS, result, score_content)(result, algorithm)
    pairs = warnings(result, safe.notes)
    sources = [hd.sr.SourceImageForMeasurementGroup.from_source_image(ds)] if result.sr_references_image else []
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"medexport {result.model_id}"),
        algorithm_id=algorithm, measurements=measurements or None,
        qualitative_evaluations=finding_items(result) + evaluations + warning_items(pairs),
        source_images=sources or None)
    stamp = [result.disclaimer] if result.disclaimer else []  # whole: ContentDescription holds 64 characters
    group[0].ContentSequence.extend(text_items(texts + [message for _, message in pairs] + stamp))
    groups = _writer(GROUP_WRITERS, result, lambda *a: [])(result, algorithm, sources)
    overlay = result.overlay()
    regions = REGION_WRITERS[overlay.kind](overlay.data, ds, algorithm, _code(c.NO_UNITS), result.label_codes) \
        if overlay is not None and overlay.kind in REGION_WRITERS else []
    report = hd.sr.MeasurementReport(observation_context=context, procedure_reported=_code(result.sr_procedure),
                                     imaging_measurements=[group, *groups, *regions])
    return _document(result, report, [ds])


def build_volume_sr(result, headers: list, seg=None):
    """TID 1500 for a volume result on a DICOM series (``headers``: its slices, no pixels needed):
    the total volume in mL (UCUM ``ml``) with the finding, warnings and disclaimer in the main group,
    and per label one group with its volume: a volumetric ROI (TID 1411) referencing its segment of
    ``seg`` (the DICOM SEG written beside it) and the source series, or, without a SEG, a group on
    the series' slices. Patient and study from the first slice (``header_safe``)."""
    safe = safe_header(headers[0])
    with refusing(safe, "DICOM SR"):
        return _build_volume(result, safe, headers, seg)


def _build_volume(result, safe, headers: list, seg):
    import highdicom as hd
    from pydicom.uid import generate_uid

    algorithm = _algorithm(result)
    pairs = warnings(result, safe.notes)
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"medexport {result.model_id}"),
        algorithm_id=algorithm,
        measurements=[_number(c.VOLUME, result.measurements["total_volume_ml"], c.MILLILITRE, algorithm)],
        qualitative_evaluations=finding_items(result) + warning_items(pairs))
    stamp = [result.disclaimer] if result.disclaimer else []
    group[0].ContentSequence.extend(text_items([f"total volume of {', '.join(result.labels)}"]
                                               + [message for _, message in pairs] + stamp))
    sources = [hd.sr.SourceImageForMeasurementGroup.from_source_image(ds) for ds in headers]
    groups = []
    for number, label in enumerate(result.labels, start=1):
        structure, part = _code(c.code_for(result.label_codes, label)), c.PART_MODIFIERS.get(label)
        common = dict(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"{label} volume"),
            finding_type=structure, algorithm_id=algorithm,
            finding_sites=[hd.sr.FindingSite(structure, topographical_modifier=_code(part))] if part else None,
            measurements=[_number(c.VOLUME, result.measurements[f"{label}_volume_ml"], c.MILLILITRE, algorithm)])
        if seg is not None:  # the segment, and the series it was made from (not each of its slices)
            segment = hd.sr.ReferencedSegment(
                sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=number,
                source_series=hd.sr.SourceSeriesForSegmentation(str(headers[0].SeriesInstanceUID)))
            groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(referenced_segment=segment, **common))
        else:
            groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(source_images=sources, **common))
    report = hd.sr.MeasurementReport(observation_context=_context(result), procedure_reported=_code(result.sr_procedure),
                                     imaging_measurements=[group, *groups])
    return _document(result, report, [safe.dataset, *headers[1:]] + ([seg] if seg is not None else []))


def volume_sr_from_source(result, source):
    """The SR of a volume result from its source (a series folder or its files), without a SEG."""
    from .volume_outputs import series_headers, source_volume

    study = source_volume(result, source)
    if study.kind == "nifti":
        raise InvalidInputError(f"{source} is NIfTI: a DICOM SR must reference a DICOM series",
                                fix="save the PDF report and the label NIfTI (predict --out), or open the DICOM series")
    return build_volume_sr(result, series_headers(study))


# result class name -> an SR built from its source itself (a series, not one DICOM object)
SOURCE_READERS = {"VolumeSegmentationResult": volume_sr_from_source}


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
        score = hd.sr.Measurement(name=_private(f"{d.label}-score", f"{d.label} box score"),
                                  value=round(float(d.score), 4), unit=unit, algorithm_id=algorithm)
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"{d.label} {i + 1}"),
            referenced_region=hd.sr.ImageRegion(hd.sr.GraphicTypeValues.POLYLINE, outline, source),
            finding_type=_code(c.code_for(label_codes, d.label)), algorithm_id=algorithm,
            measurements=[score]))
    return groups


# overlay kinds whose regions an SR records as SCOORD (results.Overlay.kind -> writer)
REGION_WRITERS = {"boxes": box_regions}


def write_dataset(ds, what: str, path: Path) -> Path:
    """Encode ``ds`` (a DICOM file) and publish it as a new file at ``path`` (never overwriting)."""
    import io

    buf = io.BytesIO()
    with refusing(None, what):
        ds.save_as(buf, enforce_file_format=True)
    return write_new(path, buf.getvalue())


def save_sr(result, source_path: str, folder: Path) -> Path:
    """Write the SR as a new file in ``folder`` (never overwriting, never into the input)."""
    return write_dataset(build_sr(result, source_path), "DICOM SR",
                         Path(folder) / f"{Path(source_path).stem}.{result.model_id}.SR.dcm")
