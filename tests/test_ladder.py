"""The precision ladder: a quantized artifact answers only the studies its own screening passes;
the bundle's fp32 artifact on the same backend answers the flagged ones, and the result says so."""
from __future__ import annotations

import numpy as np
import pytest

from medexport.engine import open_bundle
from medexport.engine.errors import ValidationError
from medexport.engine.intended_use import OutsideIntendedUseError
from medexport.export.build import _raise_if_failed
from medexport.export.steps.proof import prove

MR = "MR2_UNCR.dcm"  # an MR slice: outside the chest film model's intended use, and unlike its training data


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_a_flagged_study_is_answered_at_fp32_and_says_so(pneumonia_bundle, dcm, backend):
    with open_bundle(pneumonia_bundle, backend=backend, precision="fp16") as model:
        prepared = model.prepare(dcm(MR))
        r = model.complete(prepared)
    with open_bundle(pneumonia_bundle, backend=backend, precision="fp32") as ref:
        row = ref.scores(next(iter(prepared.feeds.values())))[0]
        expected = dict(zip(ref.manifest.labels, map(float, row)))
    codes = [w.code for w in r.warnings]
    assert r.precision == "fp32" and r.backend == backend
    assert "outside_intended_use" in codes and "answered_at_fp32" in codes
    moved = next(w.message for w in r.warnings if w.code == "answered_at_fp32")
    assert "outside_intended_use" in moved and f"fp32 artifact on {backend}" in moved
    assert r.scores == pytest.approx(expected, abs=1e-5)  # the fp32 artifact's answer to the same feeds
    assert r.second_opinion["precision"] == "fp16" and "outside_intended_use" in r.second_opinion["flags"]


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_an_unflagged_study_stays_on_the_quantized_artifact(pneumonia_bundle, shared, backend):
    film = shared / "images/kermany-cxr224/train/PNEUMONIA/person1000_virus_1681.jpeg"
    with open_bundle(pneumonia_bundle, backend=backend, precision="fp16") as model:
        r = model.predict(film)
    assert r.precision == "fp16" and "answered_at_fp32" not in [w.code for w in r.warnings]
    assert r.second_opinion is None


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_strict_mode_refuses_before_any_inference(pneumonia_bundle, dcm, backend):
    with open_bundle(pneumonia_bundle, backend=backend, precision="fp16", strict=True) as model:
        with pytest.raises(OutsideIntendedUseError, match="Modality"):
            model.prepare(dcm(MR))  # prepare reads and screens; no runtime has run


def _golden_proof(bundle, plant: float = 0.0):
    """The proof on a real artifact's golden outputs, its unflagged rows also checked as if they
    were perturbed studies (coverage), a disagreement optionally planted on the first of them."""
    golden = np.load(bundle / "golden.npz")
    names = tuple(str(n) for n in golden["names"])
    with open_bundle(bundle, backend="onnxruntime", precision="fp16") as model:
        outputs = model.infer(golden["inputs"])
        scores = model.task.scores(outputs)
        flags = model.flagged_rows(outputs, scores)
        tolerance = model.artifact.tolerance
    target = np.flatnonzero(~flags)
    assert len(target), "every stored golden row flagged: nothing to plant on"
    planted = scores[target].copy()
    planted[0] = np.clip(planted[0] + plant * np.array([-1, 1]), 0, 1)
    other = tuple(f"gamma_1.5:{names[i]}" for i in target)
    report = prove(tolerance, golden_names=names, golden_diff=np.abs(scores - golden["scores_source"]).max(1),
                   golden_flags=flags, golden_header=np.zeros(len(names), bool), stored=np.arange(len(names)),
                   val_diff=np.zeros(3), val_flags=np.zeros(3, bool), other_names=other,
                   other_diff=np.abs(planted - golden["scores_source"][target]).max(1), other_flags=flags[target])
    return report, other[0]


def test_coverage_refuses_a_disagreement_planted_on_an_unflagged_input(pneumonia_bundle):
    clean, _ = _golden_proof(pneumonia_bundle)
    assert clean["coverage"]["passed"] and not clean["problems"]
    planted, name = _golden_proof(pneumonia_bundle, plant=0.3)
    c = planted["coverage"]
    assert not c["passed"] and c["unflagged"][0]["item"] == name and c["n_unflagged"] == 1
    assert planted["in_distribution"]["passed"]  # a perturbed study: only coverage can catch it
    report = {"target": "onnxruntime", "precision": "int8", "golden": {"passed": True}, "proof": planted}
    with pytest.raises(ValidationError, match="not flagged by the artifact's own screening"):
        _raise_if_failed("onnxruntime-int8", report, None)


def test_a_quantized_artifact_without_its_fp32_rung_is_refused():
    report = {"target": "openvino", "precision": "int8", "golden": {"passed": True}, "no_fp32_rung": True}
    with pytest.raises(ValidationError, match="no fp32 artifact on openvino"):
        _raise_if_failed("openvino-int8", report, None)


def test_a_flagged_study_climbs_the_ladder_on_a_segmentation_bundle_too(tmp_path, cache_dir, dcm):
    """A mask task's fields have thresholds but no scores: the ladder climbed anyway (the frozen
    app's self-test crashed on fetal-head-us INT8 with a flagged study before this was fixed)."""
    from medexport.export.build import BuildOptions, build

    out = tmp_path / "fetal"
    build("fetal-head-us", out, BuildOptions(targets=["onnxruntime"], precisions=["fp32", "fp16"]), emit=lambda m: None)
    with open_bundle(out, backend="onnxruntime", precision="fp16") as model:
        r = model.predict(dcm(MR))  # an MR slice: outside the ultrasound model's intended use
    assert r.precision == "fp32" and "answered_at_fp32" in [w.code for w in r.warnings]
    assert r.second_opinion["precision"] == "fp16" and r.second_opinion["positive"] == []
