"""Out-of-distribution scores: the features output, the reference, the warning, inspect."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from medexport.engine import open_bundle
from medexport.engine.ood import OodReference, fit_reference
from medexport.models.data import pydicom_data, shared_data
from medexport.models.registry import WEIGHTS_DIR


def test_reference_separates_far_points_from_the_fit_distribution():
    rng = np.random.default_rng(0)
    cov = np.diag(np.linspace(0.1, 5.0, 32))
    fit = rng.multivariate_normal(np.zeros(32), cov, 400)
    ref = fit_reference(fit, (fit[:, 0] > 0).astype(int))
    inside = ref.distances(rng.multivariate_normal(np.zeros(32), cov, 200))
    outside = ref.distances(rng.multivariate_normal(np.full(32, 3.0), cov, 200))
    assert np.percentile(inside, 95) < np.percentile(outside, 5)
    assert inside.mean() == pytest.approx(np.sqrt(32), rel=0.25)  # chi distribution with 32 dof


def test_reference_round_trips_and_refuses_a_bad_file(tmp_path):
    ref = fit_reference(np.random.default_rng(1).normal(size=(50, 4)), np.zeros(50, int))
    (tmp_path / "ood.npz").write_bytes(ref.to_bytes())
    back = OodReference.from_file(tmp_path / "ood.npz")
    x = np.ones((3, 4))
    assert np.allclose(back.distances(x), ref.distances(x), rtol=1e-5)
    np.savez(tmp_path / "bad.npz", means=np.zeros((2, 4)), precision=np.zeros((3, 3)))
    with pytest.raises(Exception, match="precision"):
        OodReference.from_file(tmp_path / "bad.npz")


def _val_films(n: int) -> list:
    with open(WEIGHTS_DIR / "pneumonia-cxr.val.csv", newline="") as fh:
        rows = [r[0] for r in csv.reader(fh) if r and r[0] != "file"]
    return [shared_data() / r for r in rows[:n]]


def test_other_modalities_are_flagged_and_held_out_films_are_not(pneumonia_bundle):
    with open_bundle(pneumonia_bundle) as model:
        assert model.manifest.ood is not None and "features" in [o.name for o in model.manifest.outputs]
        others = [model.predict(p) for p in (pydicom_data() / "MR2_UNCR.dcm", pydicom_data() / "693_UNCR.dcm",
                                             shared_data() / "segmentation" / "hc18" / "images" / "001_HC.png")]
        films = [model.predict(f) for f in _val_films(40)]
    assert all(r.ood.flagged and "out_of_distribution" in [w.code for w in r.warnings] for r in others)
    flagged = sum(r.ood.flagged for r in films)
    assert flagged <= 4, f"{flagged} of 40 held-out training-like films flagged"
    assert films[0].to_dict()["ood"]["threshold"] == pytest.approx(model.manifest.ood.threshold, abs=1e-3)


def test_every_backend_gives_the_same_ood_score(pneumonia_bundle):
    study = pydicom_data() / "MR2_UNCR.dcm"
    scores = []
    for backend in ("openvino", "onnxruntime"):
        with open_bundle(pneumonia_bundle, backend=backend, precision="fp32") as model:
            scores.append(model.predict(study).ood.score)
    assert scores[0] == pytest.approx(scores[1], rel=1e-3)


def test_build_report_and_inspect_show_the_flag_rates(pneumonia_bundle):
    from medexport.export.render import inspect_bundle

    with open_bundle(pneumonia_bundle) as model:
        report = model.manifest.ood.report
    assert report["in_distribution"]["flag_rate"] <= 0.10
    assert report["other_flag_rate"] >= 0.95 and report["detection_auroc"] >= 0.95
    text, _ = inspect_bundle(pneumonia_bundle)
    assert "in-distribution flagged" in text and "ultrasound (US)" in text


def test_a_bundle_without_reference_says_so(user_bundle_unvalidated):
    with open_bundle(user_bundle_unvalidated) as model:
        assert model.manifest.ood is None
        r = model.predict(np.random.default_rng(0).uniform(0, 1, (32, 32)).astype(np.float32))
    assert r.ood is None and "no_ood_reference" in [w.code for w in r.warnings]


def test_ecg_results_carry_no_ood_warning(ecg_bundle):
    from pydicom.data import get_testdata_file

    with open_bundle(ecg_bundle) as model:
        r = model.predict(get_testdata_file("waveform_ecg.dcm"))
    assert r.ood is None and not {"no_ood_reference", "out_of_distribution"} & {w.code for w in r.warnings}


def tiny_onnx_classifier(path) -> None:
    """A 32 x 32 greyscale two-class ONNX classifier (conv, GAP, Gemm) with seeded weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (4, 1, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(0, 0.5, (2, 4)).astype(np.float32), "fc"),
             numpy_helper.from_array(np.zeros(2, np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "b"], ["out"], transB=1)]
    graph = helper.make_graph(nodes, "u", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 32, 32])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def test_a_users_onnx_classifier_gets_a_reference_from_calib_and_its_file_is_untouched(tmp_path, shared):
    from medexport.engine.checksums import sha256_file
    from medexport.export.build import BuildOptions, build

    tiny_onnx_classifier(tmp_path / "mine.onnx")
    before = sha256_file(tmp_path / "mine.onnx")
    calib = str(shared / "images" / "pneumoniamnist_trainval.npz") + ":train:80"
    out = build(str(tmp_path / "mine.onnx"), tmp_path / "mine",
                BuildOptions(targets=["onnxruntime"], task="classification", labels=["normal", "abnormal"],
                             input_size=32, calib=calib, intended_for={"modalities": ["CR", "DX"]}), emit=lambda m: None)
    assert sha256_file(tmp_path / "mine.onnx") == before  # the user's file is never modified
    with open_bundle(out) as bundle:
        features = next(o for o in bundle.manifest.outputs if o.name == "features")
        assert features.shape == (-1, 4)  # the Gemm's input: the penultimate vector
        assert bundle.manifest.ood.report["in_distribution"]["checked_on"] > 0
        r = bundle.predict(pydicom_data() / "MR2_UNCR.dcm")
    assert r.ood is not None and np.isfinite(r.ood.score)
    assert "outside_intended_use" in [w.code for w in r.warnings]  # declared --modalities CR,DX; an MR


def test_too_few_calibration_studies_for_a_reference_is_a_clear_refusal(tmp_path, shared):
    """Two studies cannot hold a quarter out for a threshold: a ConfigurationError naming --calib
    (was a numpy ValueError and a traceback), and no bundle."""
    from medexport.engine.errors import ConfigurationError
    from medexport.export.build import BuildOptions, build

    tiny_onnx_classifier(tmp_path / "mine.onnx")
    with pytest.raises(ConfigurationError, match="--calib gave 2 studies") as err:
        build(str(tmp_path / "mine.onnx"), tmp_path / "mine",
              BuildOptions(targets=["onnxruntime"], task="classification", labels=["normal", "abnormal"],
                           input_size=32, calib=str(shared / "images" / "pneumoniamnist_trainval.npz") + ":train:2"),
              emit=lambda m: None)
    assert "at least 20" in str(err.value) and not (tmp_path / "mine").exists()
