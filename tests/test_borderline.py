"""Borderline answers: the band from validation flips, the warning, the answer climbing to fp32."""
from __future__ import annotations

import json
import shutil

import pytest

from medexport.engine import open_bundle
from medexport.export.guards import GuardReport
from medexport.export.steps.validate import borderline_band
from medexport.models.data import shared_data

FILM = "images/kermany-cxr224/train/PNEUMONIA/person1000_virus_1681.jpeg"


def test_band_is_the_tolerance_widened_to_the_farthest_flip():
    flips = [{"label": "pneumonia", "source_score": 0.31, "artifact_score": 0.2},
             {"label": "pneumonia", "source_score": 0.22, "artifact_score": 0.3}]
    verdict = GuardReport("auroc", True, (), {"decision_flips": flips})
    assert borderline_band(0.05, {"pneumonia": 0.25}, verdict) == pytest.approx(0.06)
    assert borderline_band(0.05, {"pneumonia": 0.25}, None) == 0.05


def _widen(bundle, tmp_path, band: float):
    """A copy of the bundle whose fp16 artifacts declare a wide borderline band."""
    copy = tmp_path / "wide"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    for a in manifest["artifacts"]:
        if a["precision"] == "fp16":
            a["borderline"] = band
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_a_borderline_fp16_answer_is_answered_at_fp32(pneumonia_bundle, tmp_path):
    film = shared_data() / FILM
    with open_bundle(pneumonia_bundle, backend="openvino", precision="fp32") as ref:
        expected = ref.predict(film).scores["pneumonia"]
    with open_bundle(_widen(pneumonia_bundle, tmp_path, 1.0), backend="openvino", precision="fp16") as model:
        r = model.predict(film)
    codes = [w.code for w in r.warnings]
    assert "answered_at_fp32" in codes and r.precision == "fp32"  # the fp32 band (1e-3) does not flag it again
    assert r.scores["pneumonia"] == pytest.approx(expected, abs=1e-5)
    assert r.second_opinion["precision"] == "fp16" and r.second_opinion["flags"] == ["borderline"]
    assert "borderline" in next(w.message for w in r.warnings if w.code == "answered_at_fp32")


def test_a_clear_answer_is_not_borderline(pneumonia_bundle):
    with open_bundle(pneumonia_bundle, backend="openvino", precision="fp16") as model:
        band = model.artifact.borderline
        r = model.predict(shared_data() / FILM)
    margin = abs(r.scores["pneumonia"] - r.thresholds["pneumonia"])
    assert band == pytest.approx(1e-2) and margin > band
    assert "borderline" not in [w.code for w in r.warnings] and r.second_opinion is None
