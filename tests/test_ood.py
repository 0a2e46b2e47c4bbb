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
