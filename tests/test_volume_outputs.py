"""Volume outputs through `medexport predict --out --csv` (issue 29, part 3): DICOM SEG (one segment per
label, each frame referencing its slice), DICOM SR (TID 1500, volumes in mL), the PDF report with
three orthogonal slices, one CSV row per series; NIfTI: a label map, and no SEG / SR."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from medexport.engine.errors import InvalidInputError

HIPPO = "volumes/hippocampus-mr"
VOLUME = ("118565006", "SCT")


@pytest.fixture(scope="module")
def hippo(hippo_bundle):
    from medexport.engine.open import open_bundle

    with open_bundle(hippo_bundle, backend="onnxruntime", threads=2) as model:
        yield model


@pytest.fixture(scope="module")
def series(shared):
    return shared / HIPPO / "dicom" / "Study2" / "14_HCropVolume"


def _predict(hippo_bundle, source, tmp_path) -> tuple[dict, dict]:
    """Run the CLI in-process; (the files it printed, its CSV row)."""
    from medexport.export import cli

    out, table = tmp_path / "out", tmp_path / "results.csv"
    assert cli.main(["predict", str(hippo_bundle), str(source), "--backend", "onnxruntime", "--out", str(out),
                     "--csv", str(table), "--json"]) == 0
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 1  # one row per series
    files = {p.name.split(".", 2)[-1]: p for p in out.iterdir()}
    return files, rows[0]


def _seg_mask(seg, slice_uids: tuple, shape: tuple) -> np.ndarray:
    """The label map a SEG holds, rebuilt frame by frame from each frame's referenced slice and segment."""
    frames = seg.pixel_array.reshape(-1, *shape[1:])
    labels = np.zeros(shape, np.uint8)
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        segment = item.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        labels[slice_uids.index(uid)][frame > 0] = segment
    return labels


def _volumes(sr) -> dict:
    """{tracking identifier: (value, UCUM unit)} of every 'Volume' measurement in the SR."""
    found = {}
    for group in sr.ContentSequence[-1].ContentSequence:
        name = next(i.TextValue for i in group.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "112039")
        for item in group.ContentSequence:
            code = item.ConceptNameCodeSequence[0]
            if item.ValueType == "NUM" and (code.CodeValue, code.CodingSchemeDesignator) == VOLUME:
                value = item.MeasuredValueSequence[0]
                found[name] = (float(value.NumericValue), value.MeasurementUnitsCodeSequence[0].CodeValue)
    return found


def _pdf_text(path) -> tuple[int, str, int]:
    """(pages, text, images on the first page) of a PDF."""
    from pypdf import PdfReader

    reader = PdfReader(str(path))
    page = reader.pages[0]
    return len(reader.pages), "\n".join(p.extract_text() for p in reader.pages), len(page.images)


def test_a_dicom_series_gives_seg_sr_pdf_and_a_csv_row(hippo, hippo_bundle, series, tmp_path):
    import pydicom

    r = hippo.predict(str(series))
    files, row = _predict(hippo_bundle, series, tmp_path)
    assert set(files) == {"SEG.dcm", "SR.dcm", "report.pdf"}

    seg = pydicom.dcmread(files["SEG.dcm"])
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and seg.SegmentationType == "BINARY"
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["anterior hippocampus", "posterior hippocampus"]
    assert [s.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[0].CodeMeaning
            for s in seg.SegmentSequence] == ["Anterior", "Posterior"]
    assert int(seg.NumberOfFrames) == len(r.slice_uids) * 2  # every slice, each segment
    referenced = {i.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
                  for i in seg.PerFrameFunctionalGroupsSequence}
    assert referenced == set(r.slice_uids)
    assert np.array_equal(_seg_mask(seg, r.slice_uids, r.mask.shape), r.mask)
    source = pydicom.dcmread(next(series.iterdir()), stop_before_pixels=True)
    assert (seg.StudyInstanceUID, seg.PatientID, seg.FrameOfReferenceUID) == \
        (source.StudyInstanceUID, source.PatientID, source.FrameOfReferenceUID)

    sr = pydicom.dcmread(files["SR.dcm"])
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    volumes = _volumes(sr)
    assert volumes == {"medexport hippocampus-mr": (pytest.approx(r.measurements["total_volume_ml"]), "ml"),
                       "anterior volume": (pytest.approx(r.measurements["anterior_volume_ml"]), "ml"),
                       "posterior volume": (pytest.approx(r.measurements["posterior_volume_ml"]), "ml")}
    segments = [i for g in sr.ContentSequence[-1].ContentSequence for i in g.ContentSequence
                if i.ValueType == "IMAGE" and "ReferencedSegmentNumber" in i.ReferencedSOPSequence[0]]
    assert [(i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID, i.ReferencedSOPSequence[0].ReferencedSegmentNumber)
            for i in segments] == [(seg.SOPInstanceUID, 1), (seg.SOPInstanceUID, 2)]

    assert row["series_uid"] == source.SeriesInstanceUID and row["kind"] == "volume"
    assert row["precision"] == "fp32" and row["model"] == "hippocampus-mr 1.0.0"
    for key, value in r.measurements.items():
        assert float(row[f"score_{key}"]) == pytest.approx(value, abs=1e-4)
    assert row["warning_codes"].split() == [w.code for w in r.warnings]

    pages, text, images = _pdf_text(files["report.pdf"])
    assert pages >= 1 and images == 3  # axial, coronal, sagittal
    assert "not a medical device" in text and source.SeriesInstanceUID in text
    assert f"{r.measurements['total_volume_ml']:.3f} mL" in text


def test_a_nifti_gives_a_label_map_and_a_pdf_and_says_seg_needs_dicom(hippo, hippo_bundle, shared, tmp_path):
    import nibabel

    from medexport.engine.volume_outputs import SEG_NEEDS_DICOM

    source = shared / HIPPO / "images" / "hippocampus_001.nii.gz"
    r = hippo.predict(str(source))
    files, row = _predict(hippo_bundle, source, tmp_path)
    assert set(files) == {"labels.nii.gz", "report.pdf"}  # no SEG, no SR
    labels = nibabel.load(str(files["labels.nii.gz"]))
    assert np.array_equal(np.asarray(labels.dataobj), r.mask)
    assert np.allclose(labels.affine, nibabel.load(str(source)).affine)
    assert row["series_uid"] == "" and float(row["score_total_volume_ml"]) == pytest.approx(
        r.measurements["total_volume_ml"], abs=1e-4)
    assert r.save_outputs(tmp_path / "again", str(source))["seg_note"] == SEG_NEEDS_DICOM
    pages, text, images = _pdf_text(files["report.pdf"])
    assert pages >= 1 and images == 3 and "not a medical device" in text
    with pytest.raises(InvalidInputError, match="DICOM SR must reference a DICOM series"):
        from medexport.engine.sr import build_sr

        build_sr(r, str(source))


def test_an_sr_alone_references_the_series_slices(hippo, series):
    """Without a SEG (the viewer's Save DICOM SR), each label's group references the slices."""
    from medexport.engine.sr import build_sr

    r = hippo.predict(str(series))
    sr = build_sr(r, str(series))
    groups = sr.ContentSequence[-1].ContentSequence
    for group in groups[1:]:
        refs = {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in group.ContentSequence if i.ValueType == "IMAGE"}
        assert refs == set(r.slice_uids)
    assert _volumes(sr)["anterior volume"][0] == pytest.approx(r.measurements["anterior_volume_ml"])


def test_outputs_refuse_a_source_that_is_not_the_volume_read(hippo, series, shared, tmp_path):
    r = hippo.predict(str(series))
    other = shared / HIPPO / "dicom" / "Study3" / "11_HCropVolume"
    with pytest.raises(InvalidInputError, match="not the volume this result was computed on"):
        r.save_outputs(tmp_path, str(other))
    assert not any(tmp_path.iterdir())


def test_report_views_keep_the_true_aspect_and_go_through_the_mask(hippo, shared):
    """The three planes' sizes in mm are the volume's extent along the patient axes (the source's
    1 mm voxels, reordered), and the planes cross the labelled voxels."""
    from medexport.engine import read_volume
    from medexport.engine.volume_report import views

    source = shared / HIPPO / "dicom" / "Study1" / "13_HCropVolume"
    study, r = read_volume(str(source)), hippo.predict(str(source))
    planes = views(r, study.voxels)
    assert [v for v, *_ in planes] == ["axial", "coronal", "sagittal"]
    extents = sorted(n * s for n, s in zip(study.shape, study.spacing))
    for view, rgb, (h_mm, w_mm), index, count in planes:
        assert sorted([h_mm, w_mm]) in ([a, b] for a in extents for b in extents)
        grey = (rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])
        assert not grey.all(), f"the {view} plane shows no label"


def test_an_enhanced_multi_frame_mr_gets_a_seg_whose_frames_reference_its_frames(hippo, series, tmp_path):
    """The crop series as one Legacy Converted Enhanced MR (frames shuffled): the SEG references the
    one object, frame by frame, and holds the mask in the file's frame order."""
    import random

    import pydicom
    from highdicom.legacy import LegacyConvertedEnhancedMRImage

    datasets = [pydicom.dcmread(f) for f in sorted(series.iterdir())]
    random.Random(5).shuffle(datasets)
    path = tmp_path / "enhanced.dcm"
    LegacyConvertedEnhancedMRImage(datasets, pydicom.uid.generate_uid(), 99, pydicom.uid.generate_uid(), 1).save_as(path)
    r, classic = hippo.predict(str(path)), hippo.predict(str(series))
    assert np.array_equal(r.mask, classic.mask)
    files = r.save_outputs(tmp_path / "out", str(path))
    seg, source = pydicom.dcmread(files["mask_file"]), pydicom.dcmread(path, stop_before_pixels=True)
    frames = seg.pixel_array.reshape(-1, *r.mask.shape[1:])
    rebuilt = np.zeros((int(source.NumberOfFrames), *r.mask.shape[1:]), np.uint8)
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        ref = item.DerivationImageSequence[0].SourceImageSequence[0]
        assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
        number = int(ref.ReferencedFrameNumber)  # one source frame per SEG frame
        rebuilt[number - 1][frame > 0] = item.SegmentIdentificationSequence[0].ReferencedSegmentNumber
    from medexport.engine import read_volume

    order = np.asarray(read_volume(str(path)).frames) - 1
    assert np.array_equal(rebuilt[order], r.mask)  # frame order back to the sorted slices
    assert pydicom.dcmread(files["sr_file"]).ContentTemplateSequence[0].TemplateIdentifier == "1500"


def test_a_series_outside_the_intended_use_is_not_evaluated_in_sr_and_pdf(hippo, series, tmp_path):
    """The crop series relabelled CT ((0008,0060) Modality; a copy, the source is never changed):
    the SR's finding is 'Not Evaluated' with the reason, the volumes are still recorded, and the
    PDF's result line says 'Not assessed'."""
    import pydicom

    copy = tmp_path / "as-ct"
    copy.mkdir()
    for f in sorted(series.iterdir()):
        ds = pydicom.dcmread(f)
        ds.Modality = "CT"
        ds.save_as(copy / f.name)
    r = hippo.predict(str(copy))
    assert r.not_assessed == ("outside_intended_use",)
    files = r.save_outputs(tmp_path / "out", str(copy))
    sr = pydicom.dcmread(files["sr_file"])
    main = sr.ContentSequence[-1].ContentSequence[0].ContentSequence
    findings = [i.ConceptCodeSequence[0].CodeValue for i in main
                if i.ValueType == "CODE" and i.ConceptNameCodeSequence[0].get("CodeValue") == "121071"]
    assert findings == ["373121007"]  # Not Evaluated
    assert _volumes(sr)["anterior volume"][0] == pytest.approx(r.measurements["anterior_volume_ml"])
    _, text, _ = _pdf_text(files["report_file"])
    assert "Result: Not assessed: outside the model's intended use" in text
