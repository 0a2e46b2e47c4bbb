"""Robustness report: each perturbation does what it states, the build stores the table per
artifact, inspect shows it, and the same seed gives the same numbers."""
from __future__ import annotations

import numpy as np
import pytest

from medexport.engine.errors import ConfigurationError
from medexport.engine.io.ecg import EcgRecord
from medexport.export import robustness as rb

P = rb.PERTURBATIONS


def _smooth_image(h=120, w=160) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return (0.5 + 0.3 * np.sin(x / 17.0) * np.cos(y / 23.0)).astype(np.float32)


def _record(fs=300.0, seconds=10.0) -> EcgRecord:
    t = np.arange(int(fs * seconds)) / fs
    beats = np.exp(-(((t % 0.8) - 0.4) ** 2) / (2 * 0.01 ** 2))  # 75 bpm spikes of 1 mV
    signals = np.stack([beats, 0.5 * beats]).astype(np.float32)
    return EcgRecord(signals, fs, ("I", "II"), "<test>", "array", "0" * 64)


def _spectrum_peak(x: np.ndarray, fs: float) -> float:
    f = np.fft.rfftfreq(len(x), 1 / fs)
    return float(f[np.abs(np.fft.rfft(x - x.mean())).argmax()])


def test_every_issue_perturbation_is_named():
    names = set(P)
    assert {"gaussian_noise", "contrast_x0.6", "gamma_0.6", "gamma_1.5", "jpeg_q30", "blur", "rotate_+10",
            "rotate_-10", "resample_x0.5"} <= names
    assert {"baseline_wander", "mains_50hz", "mains_60hz", "muscle_noise", "amplitude_x0.5", "amplitude_x2",
            "inverted_lead"} <= names
    assert all(p.description for p in P.values())


def test_image_perturbations_keep_shape_and_range_and_change_the_pixels():
    x = _smooth_image()
    for p in rb.IMAGE_PERTURBATIONS:
        for img in (x, np.repeat(x[..., None], 3, axis=2)):  # greyscale and colour studies
            y = p.apply(img, "item")
            assert y.shape == img.shape and y.dtype == np.float32, p.name
            assert 0.0 <= y.min() and y.max() <= 1.0, p.name
            assert not np.allclose(y, img, atol=1e-3), f"{p.name} left the image unchanged"


def test_noise_contrast_gamma_are_what_they_state():
    x = _smooth_image()
    diff = P["gaussian_noise"].apply(x, "a") - x
    assert abs(diff.std() - 0.03) < 0.003 and abs(diff.mean()) < 0.003
    c = P["contrast_x0.6"].apply(x, "a")
    assert c.mean() == pytest.approx(x.mean(), abs=1e-5) and c.std() == pytest.approx(0.6 * x.std(), rel=1e-4)
    np.testing.assert_allclose(P["gamma_1.5"].apply(x, "a"), x ** 1.5, rtol=1e-5)
    np.testing.assert_allclose(P["gamma_0.6"].apply(x, "a"), x ** 0.6, rtol=1e-5)


def test_jpeg_q30_differs_but_correlates():
    rng = np.random.default_rng(0)
    x = np.clip(_smooth_image() + rng.normal(0, 0.05, (120, 160)), 0, 1).astype(np.float32)
    y = P["jpeg_q30"].apply(x, "a")
    assert np.abs(y - x).mean() > 0.01  # lossy
    assert np.corrcoef(x.ravel(), y.ravel())[0, 1] > 0.9


def test_blur_and_resampling_remove_fine_detail_and_keep_the_mean():
    checker = ((np.indices((120, 160)).sum(0) % 2) * 0.8 + 0.1).astype(np.float32)  # 1-px detail
    for name in ("blur", "resample_x0.5"):
        y = P[name].apply(checker, "a")
        assert y.std() < 0.1 * checker.std(), name  # the 1-px pattern is gone
        assert y.mean() == pytest.approx(checker.mean(), abs=0.01), name
    smooth = _smooth_image()
    assert np.abs(P["resample_x0.5"].apply(smooth, "a") - smooth).max() < 0.02  # smooth content survives


def test_rotation_turns_the_picture_and_its_truth_together():
    img = np.zeros((200, 240), np.float32)
    img[40:80, 150:200] = 1.0  # off-centre, so a rotation moves it
    p = rb.Perturb(P["rotate_+10"])
    turned = p.pixels(img, "a")
    mask = p.mask(img > 0.5, "a")
    assert turned.shape == img.shape and mask.shape == img.shape
    assert (turned > 0.5).sum() == pytest.approx(mask.sum(), rel=0.05)
    assert ((turned > 0.5) & mask).sum() / mask.sum() > 0.9  # the mask follows the pixels
    ys, xs = np.nonzero(turned > 0.5)
    assert ys.mean() < 60 - 3  # counter-clockwise: a spot right of the centre moves up
    back = rb.Perturb(P["rotate_-10"]).pixels(turned, "a")
    assert np.abs(back - img)[60:140, 60:180].max() < 0.6 and np.corrcoef(back.ravel(), img.ravel())[0, 1] > 0.9


def test_boxes_follow_a_rotated_round_object():
    h, w = 240, 320
    y, x = np.mgrid[0:h, 0:w]
    cell = ((x - 230) / 30.0) ** 2 + ((y - 70) / 18.0) ** 2 <= 1  # an ellipse, as a cell
    p = rb.Perturb(P["rotate_-10"])
    turned = p.pixels(cell.astype(np.float32), "a") > 0.5
    ys, xs = np.nonzero(turned)
    truth = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)
    box = p.boxes(np.array([[200.0, 52.0, 260.0, 88.0]]), (h, w), "a")[0]
    np.testing.assert_allclose(box, truth, atol=2.0)
    unchanged = rb.Perturb(P["blur"]).boxes(np.array([[1.0, 2.0, 3.0, 4.0]]), (h, w), "a")
    np.testing.assert_array_equal(unchanged, [[1.0, 2.0, 3.0, 4.0]])


def test_ecg_perturbations_are_what_they_state():
    r = _record()
    s = r.signals.astype(np.float64)
    np.testing.assert_array_equal(P["inverted_lead"].apply(r, "a").signals, -r.signals)
    np.testing.assert_allclose(P["amplitude_x0.5"].apply(r, "a").signals, 0.5 * s, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(P["amplitude_x2"].apply(r, "a").signals, 2 * s, rtol=1e-6, atol=1e-9)
    for name, hz in (("mains_50hz", 50.0), ("mains_60hz", 60.0)):
        d = P[name].apply(r, "a").signals - s
        assert _spectrum_peak(d[0], r.fs) == pytest.approx(hz, abs=0.2)
        assert np.abs(d).max() == pytest.approx(0.2, abs=0.005)
    d = P["baseline_wander"].apply(r, "a").signals - s
    assert _spectrum_peak(d[0], r.fs) == pytest.approx(0.3, abs=0.1) and np.abs(d).max() == pytest.approx(0.5, abs=0.01)
    d = P["muscle_noise"].apply(r, "a").signals - s
    assert d.std(axis=1) == pytest.approx([0.1, 0.1], rel=0.01)
    power = np.abs(np.fft.rfft(d[0])) ** 2
    f = np.fft.rfftfreq(d.shape[1], 1 / r.fs)
    assert power[f < 19].sum() < 1e-6 * power.sum()  # broadband above 20 Hz, no baseline
    assert P["muscle_noise"].apply(r, "a").signals.shape == r.signals.shape


def test_same_seed_same_perturbation_other_seed_or_study_another():
    x = _smooth_image()
    p = P["gaussian_noise"]
    np.testing.assert_array_equal(p.apply(x, "study-1", seed=0), p.apply(x, "study-1", seed=0))
    assert not np.array_equal(p.apply(x, "study-1", seed=0), p.apply(x, "study-1", seed=1))
    assert not np.array_equal(p.apply(x, "study-1"), p.apply(x, "study-2"))
    r = _record()
    np.testing.assert_array_equal(P["muscle_noise"].apply(r, "rec").signals, P["muscle_noise"].apply(r, "rec").signals)


def test_datasets_perturb_the_study_before_the_engines_preprocessing(shared):
    """The hook changes the pixels as read; the engine's own preprocessing follows."""
    from medexport.engine.io.image import read_image
    from medexport.engine.preprocess import image_to_tensor
    from medexport.export.datasets import load_dataset
    from medexport.models.registry import get_config
    from medexport.engine.manifest import ImagePreprocess

    spec = ImagePreprocess(**get_config("pneumonia-cxr").preprocess)
    study = sorted((shared / "images" / "cxr-nih").glob("*.png"))[0]
    p = rb.Perturb(P["gamma_1.5"])
    got = load_dataset(str(study), spec, perturb=p).inputs
    want = image_to_tensor(read_image(study, frame=0).pixels ** 1.5, spec)[0]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert not np.allclose(got, load_dataset(str(study), spec).inputs, atol=1e-3)


def test_robustness_needs_labelled_validation_data(tmp_path, cache_dir):
    from medexport.export.build import BuildOptions, build

    with pytest.raises(ConfigurationError, match="--robustness"):
        build("ecg-rhythm", tmp_path / "b", BuildOptions(targets=["onnxruntime"], robustness=True), emit=lambda m: None)
    assert not (tmp_path / "b").exists()


@pytest.fixture(scope="module")
def robust_ecg_bundle(tmp_path_factory, cache_dir, shared):
    """ecg-rhythm (ONNX Runtime and OpenVINO fp32) with a robustness report on 24 CinC records."""
    from medexport.export.build import BuildOptions, build

    out = tmp_path_factory.mktemp("robust") / "ecg-rhythm"
    build("ecg-rhythm", out, BuildOptions(targets=["onnxruntime", "openvino"], val=str(shared / "ecg" / "cinc2017-af"),
                                          robustness=True, robustness_studies=24), emit=lambda m: None)
    return out


def test_built_bundle_stores_the_table_per_artifact_and_inspect_shows_it(robust_ecg_bundle):
    from medexport.engine.bundle_read import read_manifest
    from medexport.export.render import inspect_bundle, read_reports

    manifest, _, root = read_manifest(robust_ecg_bundle, verify=True)  # the rewritten reports are checksummed
    reports = read_reports(manifest, root)
    assert set(reports) == {"onnxruntime-fp32", "openvino-fp32"}
    for key, rep in reports.items():
        r = rep["robustness"]
        assert r["metric"] == "macro_f1" and r["studies"] == 24 and r["seed"] == rb.DEFAULT_SEED
        assert [row["perturbation"] for row in r["rows"]] == [p.name for p in rb.ECG_PERTURBATIONS]
        for row in r["rows"]:
            assert 0.0 <= row["value"] <= 1.0 and row["drop"] == pytest.approx(r["clean"] - row["value"], abs=1e-4)
            assert 0 < row["n"] <= 24
        amp = {row["perturbation"]: row for row in r["rows"]}["inverted_lead"]
        assert amp["params"] == {} and "negated" in amp["description"]
    text, data = inspect_bundle(robust_ecg_bundle)
    assert "robustness onnxruntime-fp32: macro_f1 on 24 validation studies" in text
    assert "robustness openvino-fp32" in text
    for p in rb.ECG_PERTURBATIONS:
        assert p.name in text and p.description in text
    assert data["reports"]["onnxruntime-fp32"]["robustness"]["rows"]


def test_same_seed_gives_the_same_numbers_through_the_engine(robust_ecg_bundle, shared):
    """Recomputed from the finished bundle through the engine: exactly the stored numbers."""
    from medexport.engine import open_bundle
    from medexport.export.guards import guard_class

    with open_bundle(robust_ecg_bundle, backend="onnxruntime", precision="fp32") as model:
        m = model.manifest
        guard = guard_class(type(model.task), m.postprocess)(m.labels, m.postprocess, m.preprocess)
        again = rb.measure(str(shared / "ecg" / "cinc2017-af"), m, guard, {"onnxruntime-fp32": model.infer},
                           lambda run, data: model.task.scores(run(data.inputs)), studies=24, emit=lambda s: None)
    stored = __import__("json").loads((robust_ecg_bundle / "reports" / "onnxruntime-fp32.json").read_text())
    assert again["onnxruntime-fp32"]["rows"] == stored["robustness"]["rows"]
    assert again["onnxruntime-fp32"]["clean"] == stored["robustness"]["clean"]


def test_markdown_table_has_a_column_per_artifact():
    row = {"perturbation": "jpeg_q30", "description": "JPEG quality 30", "params": {}, "value": 0.9, "drop": 0.05,
           "n": 10}
    reports = {k: {"metric": "auroc", "clean": 0.95, "studies": 10, "seed": 0, "rows": [row]}
               for k in ("a-fp32", "b-int8")}
    text = rb.markdown_table(reports)
    assert "| perturbation | a-fp32 auroc (drop) | b-int8 auroc (drop) |" in text
    assert "| jpeg_q30: JPEG quality 30 | 0.900 (+0.050) | 0.900 (+0.050) |" in text
