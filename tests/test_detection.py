"""blood-cell-det end to end: colour reading, letterbox, NMS, VOC mAP, the guard, results, painter."""
import json

import numpy as np
import pytest

from medexport.engine import open_bundle
from medexport.engine.compare import average_precision, box_iou, mean_average_precision, voc_ap
from medexport.engine.errors import BundleError, InvalidInputError
from medexport.engine.io.image import read_image
from medexport.engine.manifest import DetectionPreprocess
from medexport.engine.preprocess import letterbox
from medexport.engine.results import Detection
from medexport.engine.tasks.detection import decode, nms

BCCD = "detection/bccd"
SPEC = DetectionPreprocess(size=(256, 320), mean=(0.7, 0.7, 0.7), std=(0.1, 0.1, 0.1))


def smear(shared, name="BloodImage_00000"):
    return str(shared / BCCD / "JPEGImages" / f"{name}.jpg")


# -- metrics and decoding (numpy only) ---------------------------------------------------------
def test_voc_ap_matches_a_hand_computed_case():
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    truths = [(a, np.array([0, 0])),
              (np.array([[0, 0, 10, 10], [100, 100, 150, 150]], float), np.array([0, 1]))]
    detections = [  # class 0: TP .9, FP .8 (its truth already taken), FP .7; class 1: FP .3
        (np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 5, 5]], float),
         np.array([0, 0, 0, 1]), np.array([0.9, 0.8, 0.7, 0.3])),
        (np.array([[0, 0, 10, 10], [100, 100, 150, 150]], float), np.array([0, 1]), np.array([0.6, 0.5]))]
    # class 0, by score: TP FP FP TP of 3 truths -> precision 1, .5, .33, .5 at recall 1/3 .. 2/3;
    # all-point envelope: 1 up to recall 1/3, then .5 up to 2/3, 0 beyond: AP = 1/3 + 1/6
    assert average_precision(detections, truths, 0) == pytest.approx(0.5)
    assert average_precision(detections, truths, 1) == pytest.approx(1.0)  # its one truth found first
    assert np.isnan(average_precision(detections, truths, 2))  # no truth: left out of the mean
    m = mean_average_precision(detections, truths, 3, n_boot=50)
    assert m["mean"]["value"] == pytest.approx(0.75) and m[0]["value"] == pytest.approx(0.5)
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(0.75)
    assert box_iou(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 15, 10]]))[0, 0] == pytest.approx(50 / 150)


def test_nms_keeps_one_box_per_object_and_class():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [30, 30, 40, 40]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    labels = np.array([0, 0, 1, 0])
    keep = nms(boxes, scores, labels, 0.5)
    assert keep.tolist() == [0, 2, 3]  # the overlapping RBC box goes; the same box of another class stays


def test_decode_finds_a_peak_and_its_box():
    grid = np.zeros((3 + 4, 32, 40), np.float32)
    grid[1, 10, 20] = 0.9  # a WBC centred on cell (10, 20): input pixel (164, 84)
    grid[1, 10, 21] = 0.5  # its neighbour is no peak
    grid[3:, 10, 20] = np.log(2.0)  # 2 strides = 16 px on each side
    boxes, labels, scores = decode(grid, 3, (256, 320))
    assert labels.tolist() == [1] and scores[0] == pytest.approx(0.9)
    np.testing.assert_allclose(boxes[0], [148, 68, 180, 100], atol=1e-4)


# -- colour reading and letterbox --------------------------------------------------------------
def test_colour_pictures_are_refused_for_grey_tasks_and_read_for_detection(shared):
    with pytest.raises(InvalidInputError, match="colour image"):
        read_image(smear(shared))  # the greyscale readers are unchanged
    study = read_image(smear(shared), colour=True)
    assert study.pixels.shape == (480, 640, 3) and study.pixels.dtype == np.float32
    assert 0 <= study.pixels.min() and study.pixels.max() <= 1 and np.ptp(study.pixels.mean((0, 1))) > 0.02
    grey = read_image(str(shared / "segmentation" / "isbi2012-em" / "image" / "3.png"), colour=True)
    assert grey.pixels.shape == (512, 512, 3) and np.array_equal(grey.pixels[..., 0], grey.pixels[..., 2])
    rgb = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    np.testing.assert_allclose(read_image(rgb, colour=True).pixels, rgb / 255.0, atol=1e-6)


def test_colour_dicom_is_read_as_rgb(dcm):
    study = read_image(dcm("US1_UNCR.dcm"), colour=True)
    assert study.pixels.shape == (480, 640, 3) and study.meta["colour"].startswith("RGB")
    with pytest.raises(InvalidInputError, match="Photometric"):
        read_image(dcm("US1_UNCR.dcm"))


def test_letterbox_maps_boxes_back_to_source_pixels():
    rgb = np.random.default_rng(0).random((480, 640, 3)).astype(np.float32)
    tensor, geo = letterbox(rgb, SPEC)
    assert tensor.shape == (1, 3, 256, 320) and geo.scale == (0.5, 0.5) and geo.offset == (8, 0)
    assert np.all(tensor[0, :, :8] == 0)  # padding is the mean
    np.testing.assert_allclose(geo.to_source(np.array([[10, 18, 110, 58]])), [[20, 20, 220, 100]])
    np.testing.assert_allclose(geo.to_source(np.array([[-5, 0, 400, 300]])), [[0, 0, 640, 480]])  # clipped


def test_detection_preprocess_is_validated():
    assert "letterbox" in SPEC.describe()
    with pytest.raises(BundleError, match="channels"):
        DetectionPreprocess(size=(256, 320), channels=1)
    with pytest.raises(BundleError, match="mean"):
        DetectionPreprocess(size=(256, 320), mean=(0.5, 0.5))
    with pytest.raises(BundleError, match="std"):
        DetectionPreprocess(size=(256, 320), std=(0.1, 0.0, 0.1))


# -- the bundle ----------------------------------------------------------------------------------
def test_bundle_finds_cells_on_the_source_grid(det_bundle, shared):
    from medexport.engine.compare import detection_f1
    from medexport.export.datasets import _voc_boxes

    with open_bundle(det_bundle) as model:
        r = model.predict(smear(shared))
        thresholds = model.manifest.postprocess.thresholds
    assert r.detections and r.image_shape == (480, 640)
    boxes = np.array([d.box for d in r.detections])
    assert np.all(boxes >= 0) and np.all(boxes[:, [0, 2]] <= 640) and np.all(boxes[:, [1, 3]] <= 480)
    assert all(d.score >= thresholds[d.label] for d in r.detections)
    assert r.counts == {k: sum(d.label == k for d in r.detections) for k in ("RBC", "WBC", "Platelets")}
    assert r.headline() == ", ".join(f"{k} {n}" for k, n in r.counts.items())
    truth_boxes, truth_labels = _voc_boxes(shared / BCCD / "Annotations" / "BloodImage_00000.xml", r.labels)
    found = np.array([r.labels.index(d.label) for d in r.detections])
    assert detection_f1(boxes, found, truth_boxes, truth_labels) > 0.6
    assert r.overlay().kind == "boxes" and r.finding_labels()
    json.dumps(r.to_dict())


def test_boxes_are_saved_as_csv(det_bundle, shared, tmp_path):
    with open_bundle(det_bundle) as model:
        r = model.predict(smear(shared))
    path = r.save_outputs(tmp_path)["boxes_file"]
    rows = path.read_text().splitlines()
    assert rows[0] == "label,score,x0,y0,x1,y1" and len(rows) == len(r.detections) + 1


def test_grey_task_options_and_explain_refused(det_bundle):
    from medexport.engine.errors import ConfigurationError

    with open_bundle(det_bundle) as model:
        with pytest.raises(ConfigurationError, match="explain"):
            model.task.options(explain=True)


def test_guard_report_in_the_bundle_and_a_failing_artifact(det_bundle, shared):
    from medexport.export.datasets import load_dataset
    from medexport.export.guards import GUARDS, describe_report

    report = json.loads((det_bundle / "reports" / "onnxruntime-fp32.json").read_text())
    v = report["validation"]
    assert v["metric"] == "map" and v["n"] == 12 and v["passed"]
    assert abs(v["map_drop"]) < 0.005 and set(v["source"]["ap"]) == {"RBC", "WBC", "Platelets"}
    assert "mAP@0.5" in describe_report(v)
    with open_bundle(det_bundle) as model:
        val = load_dataset(f"{shared / BCCD}:val:6", model.manifest.preprocess, labels=model.manifest.labels)
        rows = model.scores(val.inputs)
        guard = GUARDS["map"](model.manifest.labels, model.manifest.postprocess, model.manifest.preprocess,
                              max_drop=0.02, n_boot=50)
    assert guard.report(val, rows, rows).passed
    shrunk = rows.copy()
    shrunk[:, 3:] -= 1.0  # every box a third of its size: no box matches its cell any more
    bad = guard.report(val, rows, shrunk)
    assert not bad.passed and "mAP@0.5 drops" in bad.problems[0]
    assert bad.data["artifact"]["map"]["value"] < 0.5 * bad.data["source"]["map"]["value"]


def test_disagreement_counts_lost_confident_boxes(det_bundle, shared):
    with open_bundle(det_bundle) as model:
        ref = model.scores(letterbox(read_image(smear(shared), colour=True).pixels, model.manifest.preprocess)[0])
        assert model.task.disagreement(ref, ref.copy())[0] == 0.0
        lost = ref.copy()
        lost[:, :3] *= 0.01  # every box gone
        gap = model.task.disagreement(ref, lost)[0]
        r = model.predict(smear(shared))
        thresholds = model.manifest.postprocess.thresholds
    # the most confident lost box counts its margin over its threshold
    assert gap == pytest.approx(max(d.score - thresholds[d.label] for d in r.detections), abs=1e-4)


# -- viewer --------------------------------------------------------------------------------------
def test_boxes_painter_draws_outlines():
    from medexport.desktop.imaging import IMAGE_PAINTERS

    dets = (Detection("WBC", 0.9, (10.0, 20.0, 60.0, 50.0)), Detection("RBC", 0.8, (600.0, 400.0, 700.0, 500.0)))
    rgba = IMAGE_PAINTERS["boxes"]((dets, (480, 640), ("RBC", "WBC", "Platelets")), 0.8)
    assert rgba.shape == (480, 640, 4) and rgba.dtype == np.uint8
    assert tuple(rgba[20, 30, :3]) == (40, 110, 255) and rgba[20, 30, 3] > 0  # WBC top edge, blue
    assert rgba[35, 35, 3] == 0  # inside stays clear
    assert tuple(rgba[479, 620, :3]) == (230, 40, 40)  # the RBC box is clipped to the image


def test_viewer_shows_a_colour_smear_as_grey(shared):
    from medexport.engine.studies import study_for

    study = study_for(shared / BCCD / "JPEGImages" / "BloodImage_00000.jpg")
    image = study.load()
    assert image.pixels.shape == (480, 640) and "luma" in image.meta["greyscale"]
    broken = shared / "ecg" / "mitdb" / "100.hea"  # not a picture: the greyscale reader's refusal stays
    with pytest.raises(InvalidInputError):
        type(study)(str(broken), "image", "x").load()


def test_sr_records_each_box_as_a_scoord_region(det_bundle, dcm, tmp_path):
    import pydicom

    from medexport.engine.sr import save_sr

    with open_bundle(det_bundle) as model:
        r = model.predict(dcm("US1_UNCR.dcm"))  # a colour ultrasound: any boxes it finds are regions
    r = type(r)(**{**r.__dict__, "detections": (Detection("WBC", 0.9, (10.0, 20.0, 60.0, 50.0)),)})
    sr = pydicom.dcmread(save_sr(r, dcm("US1_UNCR.dcm"), tmp_path))
    found = []

    def walk(items):
        for item in items:
            if item.get("ValueType") == "SCOORD":
                found.append((item.GraphicType, [float(v) for v in item.GraphicData]))
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    assert found == [("POLYLINE", [10, 20, 60, 20, 60, 50, 10, 50, 10, 20])]
