"""Fetal head biometry: ellipse fit, perimeter, Hadlock GA, pixel spacing, the task end to end, its guard."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from medexport.engine.ellipse import (HADLOCK_HC_CM, Ellipse, boundary_points, fit_ellipse, hadlock_ga_weeks,
                                      head_measurements, ramanujan_perimeter)
from medexport.engine.errors import ConfigurationError, InvalidInputError
from medexport.engine.tasks import MeasureOptions


def _mask(ell: Ellipse, shape=(540, 800)) -> np.ndarray:
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    th = math.radians(ell.angle_deg)
    u = (xx - ell.cx) * math.cos(th) + (yy - ell.cy) * math.sin(th)
    v = -(xx - ell.cx) * math.sin(th) + (yy - ell.cy) * math.cos(th)
    return ((u / ell.semi_major) ** 2 + (v / ell.semi_minor) ** 2 <= 1).astype(np.float32)


@pytest.mark.parametrize("angle", [0.0, 33.0, 90.0, 151.5])
def test_fit_recovers_exact_ellipse_from_points(angle):
    truth = Ellipse(400.3, 270.1, 180.0, 120.0, angle)
    fit = fit_ellipse(truth.points(400))
    assert fit.cx == pytest.approx(400.3, abs=1e-6) and fit.cy == pytest.approx(270.1, abs=1e-6)
    assert fit.semi_major == pytest.approx(180.0, abs=1e-6) and fit.semi_minor == pytest.approx(120.0, abs=1e-6)
    assert fit.angle_deg == pytest.approx(angle, abs=1e-6)


def test_fit_on_a_rasterised_mask_is_subpixel_and_ignores_a_stray_blob():
    truth = Ellipse(390.0, 260.0, 200.0, 150.0, 20.0)
    mask = _mask(truth)
    mask[20:40, 20:40] = 1  # a stray blob far from the head
    fit = fit_ellipse(boundary_points(mask))
    assert abs(fit.semi_major - 200.0) < 0.3 and abs(fit.semi_minor - 150.0) < 0.3
    assert abs(fit.angle_deg - 20.0) < 0.2 and abs(fit.cx - 390.0) < 0.2


def test_regions_match_a_hand_labelled_mask_and_holes_are_filled():
    from medexport.engine.regions import fill_holes, label_regions, largest_region

    m = np.zeros((9, 12), bool)
    m[1:6, 1:6] = True  # a ring (hole at 3, 3) ...
    m[3, 3] = False
    m[1:3, 8:11] = True  # ... a second square ...
    m[6, 6] = True  # ... and a pixel touching the ring only diagonally (4-connectivity: its own region)
    m[8, 0:3] = True  # a run on the last row
    labels, n = label_regions(m)
    assert n == 4 and len(np.unique(labels[m])) == 4 and (labels[~m] == 0).all()
    assert fill_holes(m)[3, 3] and fill_holes(m).sum() == m.sum() + 1
    big = largest_region(m)
    assert big.sum() == 25 and big[3, 3] and not big[1, 8] and not big[6, 6]
    assert not largest_region(np.zeros((4, 4), bool)).any()


def test_head_outline_ignores_a_second_blob_touching_the_fit_and_a_dark_hole():
    from medexport.engine.ellipse import head_outline

    truth = Ellipse(330.0, 270.0, 180.0, 140.0, 10.0)
    p = _mask(truth)
    p[150:260, 560:680] = 1.0  # a second blob 50 px right of the head (a limb, the placenta)
    p += _mask(Ellipse(300.0, 250.0, 60.0, 40.0, 0.0)) * -1.0  # a dark hole inside the skull
    p = np.clip(p, 0.0, 1.0)
    fit = fit_ellipse(head_outline(p, 0.5))
    assert abs(fit.perimeter() - truth.perimeter()) < 2.0 and abs(fit.cx - 330.0) < 0.5
    assert abs(fit_ellipse(boundary_points(p, 0.5)).perimeter() - truth.perimeter()) > 20  # the plain outline is bent


def test_ramanujan_perimeter_matches_numerical_integration():
    for a, b in ((1.0, 1.0), (180.0, 120.0), (100.0, 30.0)):
        t = np.linspace(0, 2 * np.pi, 200001)
        speed = np.hypot(a * np.sin(t), b * np.cos(t))
        numeric = float(np.sum((speed[1:] + speed[:-1]) / 2 * np.diff(t)))
        assert ramanujan_perimeter(a, b) == pytest.approx(numeric, rel=1e-7)  # 7e-8 at 10:3
    assert ramanujan_perimeter(10, 10) == pytest.approx(2 * math.pi * 10)


def test_hadlock_at_a_known_hc_and_refused_outside_its_range():
    # Hadlock 1984: HC 17.5 cm -> 8.96 + 0.54*17.5 + 0.0003*17.5^3 = 20.01 weeks (tables: ~20 weeks)
    assert hadlock_ga_weeks(175.0) == pytest.approx(8.96 + 0.54 * 17.5 + 0.0003 * 17.5 ** 3)
    assert hadlock_ga_weeks(175.0) == pytest.approx(20.0, abs=0.05)
    assert hadlock_ga_weeks(HADLOCK_HC_CM[0] * 10 - 1) is None
    assert hadlock_ga_weeks(HADLOCK_HC_CM[1] * 10 + 1) is None
    small = Ellipse(100, 100, 12.0, 10.0, 0.0)  # HC ~69 mm, under the range
    m = head_measurements(small.points(200), (1.0, 1.0))
    assert m["head_circumference_mm"] == pytest.approx(small.perimeter(), abs=0.01)
    assert m["gestational_age_weeks"] is None


def test_measurements_in_mm_use_anisotropic_spacing_and_pixels_without_spacing():
    circle = Ellipse(200, 200, 100.0, 100.0, 0.0)
    mm = head_measurements(circle.points(400), (0.2, 0.1))  # rows 0.2 mm, columns 0.1 mm
    assert mm["biparietal_diameter_mm"] == pytest.approx(20.0, abs=1e-6)  # 200 px across columns
    assert mm["occipitofrontal_diameter_mm"] == pytest.approx(40.0, abs=1e-6)
    px = head_measurements(circle.points(400), None)
    assert set(px) == {"head_circumference_px", "biparietal_diameter_px", "occipitofrontal_diameter_px"}
    assert px["head_circumference_px"] == pytest.approx(2 * math.pi * 100, abs=0.01)


def test_measure_options_are_checked():
    assert MeasureOptions(pixel_size_mm=0.12).pixel_size_mm == 0.12
    for bad in (0, -1.0, float("nan"), True, "0.1"):
        with pytest.raises(ConfigurationError):
            MeasureOptions(pixel_size_mm=bad)


def _us_dicom(path, *, pixel_spacing=None, region=None, rows=540, cols=800):
    """A small ultrasound DICOM (an HC18-like frame) with optional spacing tags."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = UltrasoundImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientName, ds.PatientID = "US", "Test^Fetal", "T1"
    ds.PatientBirthDate = ds.PatientSex = ds.AccessionNumber = ds.ReferringPhysicianName = ""
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "20260101", "120000", "1", 1, 1
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    img = (_mask(Ellipse(cols / 2, rows / 2, 200, 150, 10), (rows, cols)) * 180 + 20).astype(np.uint8)
    ds.PixelData = img.tobytes()
    if pixel_spacing:
        ds.PixelSpacing = list(pixel_spacing)
    if region:
        item = Dataset()
        item.RegionSpatialFormat, item.RegionDataType = 1, 1
        item.RegionLocationMinX0, item.RegionLocationMinY0 = 0, 0
        item.RegionLocationMaxX1, item.RegionLocationMaxY1 = cols - 1, rows - 1
        item.PhysicalUnitsXDirection, item.PhysicalUnitsYDirection = region[0], region[0]
        item.PhysicalDeltaX, item.PhysicalDeltaY = region[1], region[2]
        ds.SequenceOfUltrasoundRegions = [item]
    ds.save_as(path, enforce_file_format=True)
    return str(path)


def test_pixel_spacing_from_dicom_tags(tmp_path):
    from medexport.engine.io.dicom import pixel_spacing_mm

    assert pixel_spacing_mm(_us_dicom(tmp_path / "a.dcm", pixel_spacing=(0.15, 0.12))) == \
        ((0.15, 0.12), "DICOM (0028,0030) Pixel Spacing")
    spacing, where = pixel_spacing_mm(_us_dicom(tmp_path / "b.dcm", region=(3, 0.011, 0.013)))  # cm
    assert spacing == pytest.approx((0.13, 0.11)) and "(0018,6011)" in where
    assert pixel_spacing_mm(_us_dicom(tmp_path / "c.dcm", region=(4, 0.011, 0.013))) is None  # unit 4 = seconds
    assert pixel_spacing_mm(_us_dicom(tmp_path / "d.dcm")) is None
    with pytest.raises(InvalidInputError, match=r"\(0018,602C\)"):
        pixel_spacing_mm(_us_dicom(tmp_path / "e.dcm", region=(3, 0.0, 0.013)))


# held-out frames of typical difficulty (the model's median HC error is 1.7 mm; the card lists its
# failures, e.g. 024_HC and 071_HC, where it outlines only part of the head)
def _held_out(shared, n=3):
    """The first ``n`` held-out frames by name (the recipe's split by pregnancy; not picked by result)."""
    from medexport.models.recipes.fetal_head_us import hc18_items, hc18_split

    return sorted(hc18_split(hc18_items())[1], key=lambda it: it.name)[:n]


def test_bundle_measures_held_out_frames_close_to_the_sonographer(fetal_bundle, shared):
    from medexport.engine import open_bundle

    errors = []
    with open_bundle(fetal_bundle) as model:
        for item in _held_out(shared, 9):
            r = model.predict(str(shared / "segmentation" / "hc18" / "images" / item.name), pixel_size_mm=item.pixel_mm)
            hc = r.measurements["head_circumference_mm"]
            errors.append(abs(hc - item.hc_mm))
            assert r.measurements["biparietal_diameter_mm"] < r.measurements["occipitofrontal_diameter_mm"]
            assert r.headline().startswith(f"HC {hc:.1f} mm, BPD ")
            assert r.spacing_source.startswith("given") and r.to_dict()["units"] == "mm"
            assert r.overlay().kind == "ellipse" and r.mask.shape == (540, 800)
    assert sorted(errors)[len(errors) // 2] < 4.0, errors  # the median frame within 4 mm of the sonographer


def test_bundle_measures_the_head_not_the_second_blob(fetal_bundle, shared):
    """112_HC (held out): the model also lights a faint second blob at the top of the frame; the
    plain outline put HC 24.9 mm over the sonographer's, the largest region's outline 3.6 mm under."""
    from medexport.engine import open_bundle
    from medexport.models.recipes.fetal_head_us import hc18_items

    item = next(it for it in hc18_items() if it.name == "112_HC.png")
    with open_bundle(fetal_bundle) as model:
        r = model.predict(str(shared / "segmentation" / "hc18" / "images" / item.name), pixel_size_mm=item.pixel_mm)
    assert abs(r.measurements["head_circumference_mm"] - item.hc_mm) < 5.0, (r.measurements, item.hc_mm)


def test_without_spacing_lengths_stay_in_pixels_and_the_result_says_so(fetal_bundle, shared, tmp_path):
    from medexport.engine import open_bundle

    item = _held_out(shared, 1)[0]
    study = str(shared / "segmentation" / "hc18" / "images" / item.name)
    with open_bundle(fetal_bundle) as model:
        r = model.predict(study)
        in_mm = model.predict(study, pixel_size_mm=item.pixel_mm)
    assert "gestational_age_weeks" not in r.measurements and "head_circumference_mm" not in r.measurements
    hc_px = r.measurements["head_circumference_px"]
    assert abs(hc_px * item.pixel_mm - in_mm.measurements["head_circumference_mm"]) < 0.5  # same outline, other unit
    assert "no pixel spacing" in r.headline() and r.spacing_source == "none"
    assert any(w.code == "no_pixel_spacing" and "no pixel spacing" in w.message for w in r.warnings) and r.to_dict()["units"] == "pixels"
    saved = r.save_outputs(tmp_path)["mask_file"]
    assert saved.suffix == ".png"


def test_dicom_spacing_is_used_and_a_conflicting_pixel_size_refused(fetal_bundle, tmp_path):
    from medexport.engine import open_bundle

    path = _us_dicom(tmp_path / "us.dcm", region=(3, 0.012, 0.012))
    with open_bundle(fetal_bundle) as model:
        r = model.predict(path)
        assert r.pixel_spacing_mm == pytest.approx((0.12, 0.12)) and "(0018,6011)" in r.spacing_source
        assert "head_circumference_mm" in r.measurements
        assert model.predict(path, pixel_size_mm=0.1201).pixel_spacing_mm == pytest.approx((0.12, 0.12))
        with pytest.raises(ConfigurationError, match="0018,6011"):
            model.predict(path, pixel_size_mm=0.2)
        with pytest.raises(ConfigurationError, match="lead"):
            model.predict(path, lead="II")


def test_outside_hadlock_range_is_a_warning_not_an_error(fetal_bundle, shared):
    from medexport.engine import open_bundle

    item = _held_out(shared, 1)[0]
    with open_bundle(fetal_bundle) as model:  # a pixel size 8x too large: HC far beyond 36 cm
        r = model.predict(str(shared / "segmentation" / "hc18" / "images" / item.name), pixel_size_mm=item.pixel_mm * 8)
    assert r.measurements["gestational_age_weeks"] is None
    assert "GA outside the formula's range" in r.headline()
    assert any(w.code == "outside_formula_range" and "outside the Hadlock formula" in w.message for w in r.warnings)


def test_guard_report_has_dice_and_hc_for_source_and_artifact(fetal_bundle):
    import json

    from medexport.export.guards import describe_report

    report = json.loads((fetal_bundle / "reports" / "onnxruntime-fp32.json").read_text())
    v = report["validation"]
    assert v["metric"] == "dice_hc" and v["n"] == 12
    for side in ("source", "artifact"):
        # 12 random held-out frames, failures included (held-out mean Dice 0.95, HC MAE 3.1 mm)
        assert 0.8 < v[side]["dice"]["value"] <= 1 and v[side]["hc_mae_mm"]["value"] < 10.0
        lo, hi = v[side]["hc_mae_mm"]["ci95"]
        assert lo <= v[side]["hc_mae_mm"]["value"] <= hi
    assert abs(v["hc_mae_increase_mm"]) < 0.05 and "HC MAE" in describe_report(v)
    assert report["golden"]["measure"] == "share of mask pixels changed"


def test_guard_refuses_an_hc_rise_beyond_its_budget(shared):
    from medexport.engine.manifest import ImagePreprocess, Postprocess
    from medexport.engine.preprocess import Geometry
    from medexport.export.datasets import Dataset
    from medexport.export.guards import HcGuard

    truth = Ellipse(400, 270, 200, 150, 0)
    mask = _mask(truth)
    grid = np.stack([mask[None], mask[None]])  # the model grid is the source grid here
    bigger = np.stack([_mask(Ellipse(400, 270, 203, 153, 0))[None]] * 2)
    extras = {"masks": [mask > 0] * 2, "shapes": [mask.shape] * 2, "geometries": [Geometry(mask.shape, (0, 0, 540, 800))] * 2,
              "pixel_mm": [0.1, 0.1], "hc_mm": [truth.perimeter() * 0.1] * 2}
    val = Dataset(grid, np.zeros(2, np.int64), ("a", "b"), None, extras)
    guard = HcGuard(("head",), Postprocess("sigmoid", {"head": 0.5}), ImagePreprocess(size=(540, 800)), max_drop=0.01,
                    n_boot=50)
    same = guard.report(val, grid, grid)
    assert same.passed and same.data["source"]["hc_mae_mm"]["value"] < 0.1
    worse = guard.report(val, grid, bigger)  # 3 px larger semi-axes at 0.1 mm: HC + ~1.9 mm
    assert not worse.passed and any("HC mean absolute difference rises" in p for p in worse.problems)
    assert worse.data["hc_mae_increase_mm"] == pytest.approx(2 * math.pi * 0.3, abs=0.1)


def test_ellipse_painter_draws_the_mask_and_the_outline():
    from medexport.desktop.imaging import IMAGE_PAINTERS

    ell = Ellipse(100, 80, 60, 40, 30)
    mask = _mask(ell, (160, 200)) > 0
    rgba = IMAGE_PAINTERS["ellipse"]((mask, ell), 0.6)
    assert rgba.shape == (160, 200, 4)
    on_line = np.rint(ell.points(720)).astype(int)
    assert (rgba[on_line[:, 1], on_line[:, 0], 3] == 255).all()  # the outline is opaque
    assert rgba[80, 100, 3] == int(0.3 * 255) and rgba[2, 2, 3] == 0  # the mask tinted, outside clear
    assert (IMAGE_PAINTERS["ellipse"]((mask, None), 0.6)[..., 3] < 255).all()  # no ellipse: mask only


def test_hc18_validation_split_is_by_pregnancy(shared):
    from medexport.models.recipes.fetal_head_us import hc18_items, hc18_split

    train, held = hc18_split(hc18_items())
    assert len(train) + len(held) == 799
    assert not {i.pregnancy for i in train} & {i.pregnancy for i in held}
    with open(shared / "segmentation" / "hc18" / "pixel_size_and_hc.csv", newline="") as fh:
        assert sum(1 for r in csv.reader(fh) if r and r[0].endswith(".png")) == 799


def test_sr_records_the_measurements_with_ucum_units(fetal_bundle, tmp_path):
    from medexport.engine.sr import build_sr
    from medexport.engine import open_bundle

    path = _us_dicom(tmp_path / "us.dcm", pixel_spacing=(0.12, 0.12))
    with open_bundle(fetal_bundle) as model:
        r = model.predict(path)
    sr = build_sr(r, path)
    units = {}

    def walk(items):
        for it in items:
            if it.get("MeasuredValueSequence"):
                mv = it.MeasuredValueSequence[0]
                units[it.ConceptNameCodeSequence[0].CodeValue] = (mv.MeasurementUnitsCodeSequence[0].CodeValue,
                                                                  float(mv.NumericValue))
            walk(it.get("ContentSequence", []))

    walk(sr.ContentSequence)
    # LOINC-coded biometry (as in the obstetric ultrasound templates): HC 11984-2, GA 18185-9
    assert units["11984-2"][0] == "mm"
    assert units["11984-2"][1] == pytest.approx(r.measurements["head_circumference_mm"], abs=1e-3)
    if r.measurements["gestational_age_weeks"] is not None:
        assert units["18185-9"][0] == "wk"
    assert units["head_fraction"][0] == "1"
