"""INT8 builds: the validation report, and the refusal when the budget is missed."""
import json
import subprocess
import sys
from pathlib import Path

import pytest


def medexport(*args):
    exe = Path(sys.executable).with_name("medexport")
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def data(shared):
    npz = shared / "images" / "pneumoniamnist_trainval.npz"
    return ["--calib", f"{npz}:train", "--calib-size", "200", "--val", f"{npz}:val"]


def test_int8_bundle_carries_its_report(tmp_path, data, cache_dir):
    out = tmp_path / "q"
    proc = medexport("build", "pneumonia-cxr", "--target", "onnxruntime", "--precision", "fp32,int8", *data, "-o", out)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "reports" / "onnxruntime-int8.json").read_text())
    v = report["validation"]
    art, src = v["per_label"]["pneumonia"]["artifact"], v["per_label"]["pneumonia"]["source"]
    assert v["n"] == 524 and v["max_drop"] == 0.005 and v["passed"]
    assert src["auroc"]["value"] - art["auroc"]["value"] <= 0.005
    lo, hi = art["auroc"]["ci95"]
    assert lo <= art["auroc"]["value"] <= hi and set(art) >= {"sensitivity", "specificity"}
    assert len(v["decision_flips"]) == v["n_flips"]
    assert report["golden"]["heatmap_correlation"]["mean"] > 0.9  # INT8 looks where FP32 looks
    shown = medexport("inspect", out).stdout
    assert "onnxruntime-int8" in shown and "flips of 524" in shown


def test_missed_budget_fails_with_the_report_and_writes_nothing(tmp_path, data, cache_dir):
    out = tmp_path / "q"
    proc = medexport("build", "pneumonia-cxr", "--target", "openvino", "--precision", "int8", *data,
                     "--max-decision-drop", "0", "-o", out)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "openvino-int8 failed validation" in proc.stderr and "no bundle was written" in proc.stderr
    assert '"decision_flips"' in proc.stderr and '"specificity"' in proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".q.building*"))


def test_int8_without_validation_data_is_refused(tmp_path, shared):
    npz = shared / "images" / "pneumoniamnist_trainval.npz"
    proc = medexport("build", "pneumonia-cxr", "--target", "openvino", "--precision", "int8",
                     "--calib", f"{npz}:train", "-o", tmp_path / "q")
    assert proc.returncode == 2 and "needs labelled validation data" in proc.stderr
