"""Site calibration (engine/calibrate.py, ``medexport calibrate``): refusals, the parent chain,
temperature and threshold applied by the engine, and the CLI without torch."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medexport.engine import ConfigurationError, open_bundle, read_manifest
from medexport.engine.calibrate import (MIN_PER_CLASS, Goal, calibrate, finding, fit_temperature, fit_threshold,
                                        read_site_data, rescale_scores, sensitivity_confidence, write_calibrated)
from medexport.engine.checksums import sha256_file
from medexport.engine.compare import activate, softmax
from medexport.engine.errors import BundleError
from medexport.engine.manifest import Manifest
from medexport.engine.open import self_test_bundle

from test_layering import BLOCK

VAL = Path(__file__).resolve().parent.parent / "models" / "weights" / "pneumonia-cxr.val.csv"


def site_folder(root: Path, shared: Path, normal: int, pneumonia: int, *, orphans: int = 0, relabel=None) -> Path:
    """A labelled site folder of held-out validation films (links, labels.csv), with ``orphans``
    extra rows naming films that are not there; ``relabel(labels)`` rewrites the true labels."""
    with open(VAL, newline="") as fh:
        rows = [r for r in csv.reader(fh) if r and r[0] != "file"]
    picked = [r for r in rows if r[1] == "normal"][:normal] + [r for r in rows if r[1] == "pneumonia"][:pneumonia]
    labels = [label for _, label in picked]
    root.mkdir(parents=True)
    with open(root / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label"])
        for (rel, _), label in zip(picked, relabel(labels) if relabel else labels):
            (root / Path(rel).name).symlink_to(shared / rel)
            w.writerow([Path(rel).name, label])
        w.writerows([f"not-here-{i}.jpeg", "normal"] for i in range(orphans))
    return root


@pytest.fixture(scope="module")
def site(tmp_path_factory, shared):
    return site_folder(tmp_path_factory.mktemp("site") / "site", shared, 24, 30, orphans=2)


@pytest.fixture(scope="module")
def calibrated(pneumonia_bundle, site, tmp_path_factory):
    """(calibration record, new bundle path) for the sensitivity goal."""
    with open_bundle(pneumonia_bundle, backend="onnxruntime") as model:
        result = calibrate(model, site, Goal(0.95, 0.5), n_boot=200)
    return result, write_calibrated(pneumonia_bundle, result, tmp_path_factory.mktemp("cal") / "calibrated")


# -- refusals --------------------------------------------------------------------------------------
def test_too_few_cases_are_refused_with_the_number_needed(pneumonia_bundle, shared, tmp_path):
    folder = site_folder(tmp_path / "small", shared, 12, 30)
    with open_bundle(pneumonia_bundle, backend="onnxruntime") as model, \
            pytest.raises(ConfigurationError) as err:
        calibrate(model, folder, Goal(0.95))
    message = str(err.value)
    assert "12 normal" in message and f"at least {MIN_PER_CLASS}" in message
    assert f"add {MIN_PER_CLASS - 12} more 'normal' studies" in message
    assert not (tmp_path / "out").exists()


def test_data_without_labels_and_other_tasks_are_refused(pneumonia_bundle, tmp_path):
    from PIL import Image

    from medexport.engine.tasks.segmentation import SegmentationTask

    (tmp_path / "d").mkdir()
    Image.new("L", (64, 64), 9).save(tmp_path / "d" / "a.png")
    manifest, _, _ = read_manifest(pneumonia_bundle)
    with pytest.raises(ConfigurationError, match="no labels.csv"):
        read_site_data(tmp_path / "d", manifest, "pneumonia")
    with pytest.raises(ConfigurationError, match="site calibration re-fits"):
        finding(manifest, SegmentationTask(manifest))
    with pytest.raises(ConfigurationError, match="target sensitivity"):
        Goal(1.2)


@pytest.mark.parametrize("relabel, found", [
    (lambda y: list(np.random.default_rng(3).permutation(y)), "includes 0.5, so the model is no better than chance"),
    (lambda y: ["pneumonia" if v == "normal" else "normal" for v in y], "ranks them in reverse (are the labels swapped?)"),
])
def test_a_model_no_better_than_chance_on_the_data_is_refused(pneumonia_bundle, shared, tmp_path, relabel, found):
    folder = site_folder(tmp_path / "mislabelled", shared, 24, 30, relabel=relabel)
    with open_bundle(pneumonia_bundle, backend="onnxruntime") as model, pytest.raises(ConfigurationError) as err:
        calibrate(model, folder, Goal(0.95), n_boot=200)
    assert "on these 54 studies the AUROC for 'pneumonia'" in str(err.value) and found in str(err.value)
    assert "needs retraining" in str(err.value)


def test_class_sub_folders_are_the_labels(pneumonia_bundle, shared, tmp_path):
    root = shared / "images" / "kermany-cxr224" / "train"
    for kind, n in (("NORMAL", 3), ("pneumonia", 2)):  # folder names match the labels in any case
        (tmp_path / "site" / kind).mkdir(parents=True)
        for f in sorted((root / kind.upper()).glob("*.jpeg"))[:n]:
            (tmp_path / "site" / kind / f.name).symlink_to(f)
    manifest, _, _ = read_manifest(pneumonia_bundle)
    data = read_site_data(tmp_path / "site", manifest, "pneumonia")
    assert data.counts("pneumonia") == {"pneumonia": 2, "normal": 3} and data.label_source == "sub-folders"
    (tmp_path / "site" / "Bacterial").mkdir()
    (tmp_path / "site" / "Bacterial" / "x.jpeg").symlink_to(next(root.glob("PNEUMONIA/*.jpeg")))
    with pytest.raises(ConfigurationError, match=r"\['Bacterial'\] that are not the model's labels"):
        read_site_data(tmp_path / "site", manifest, "pneumonia")


def test_manifest_refuses_a_bad_temperature(pneumonia_bundle):
    data = json.loads((pneumonia_bundle / "manifest.json").read_text())
    assert Manifest.from_dict(data).postprocess.temperature == 1.0  # older manifests: default 1
    for bad in (0, -1.0, float("nan"), True):
        data["postprocess"]["temperature"] = bad
        with pytest.raises(BundleError, match="postprocess.temperature"):
            Manifest.from_dict(data)


# -- fitting ---------------------------------------------------------------------------------------
def test_temperature_fit_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (4000, 2))
    classes = (rng.random(4000) < softmax(logits / 2.5)[:, 1]).astype(int)  # labels drawn at T = 2.5
    assert fit_temperature(logits, classes, 1, "softmax") == pytest.approx(2.5, rel=0.1)
    binary = (rng.random(4000) < 1 / (1 + np.exp(-logits[:, 1] / 0.5))).astype(int)
    assert fit_temperature(logits, binary, 1, "sigmoid") == pytest.approx(0.5, rel=0.1)


def test_threshold_meets_the_goal_on_the_data():
    rng = np.random.default_rng(1)
    positive = np.r_[np.ones(200, bool), np.zeros(200, bool)]
    scores = np.r_[rng.beta(5, 2, 200), rng.beta(2, 5, 200)]
    t = fit_threshold(scores, positive, Goal(0.95, 0.0))
    assert (scores[positive] >= t).mean() >= 0.95 > (scores[positive] >= t + 1e-3).mean() - 0.01
    strict = fit_threshold(scores, positive, Goal(0.95, 0.9))
    assert strict < t  # more confidence keeps more positives above the threshold
    assert sensitivity_confidence(int((scores[positive] >= strict).sum()), 200, 0.95) >= 0.9
    youden = fit_threshold(scores, positive, Goal(None))
    sens, spec = (scores[positive] >= youden).mean(), (scores[~positive] < youden).mean()
    assert all(sens + spec >= (scores[positive] >= c).mean() + (scores[~positive] < c).mean() - 1e-12
               for c in np.linspace(0, 1, 101))


def test_rescaled_scores_equal_scores_at_the_new_temperature():
    logits = np.array([[2.0, -1.0], [-3.0, 4.0], [0.5, 0.4]])
    for activation in ("softmax", "sigmoid"):
        at_1 = activate(logits, activation)
        assert np.allclose(rescale_scores(at_1, activation, 1 / 0.4), activate(logits, activation, 0.4))


# -- the new bundle --------------------------------------------------------------------------------
def test_calibrated_bundle_records_its_parent_and_verifies(calibrated, pneumonia_bundle, site):
    result, path = calibrated
    parent, parent_sha, parent_root = read_manifest(pneumonia_bundle)
    new, new_sha, root = read_manifest(path)  # every checksum verified
    record = new.provenance["calibration"]
    assert record["parent"]["sha256"] == parent_sha and new_sha != parent_sha
    assert record["data"]["studies"] == 54 and record["data"]["per_class"] == {"pneumonia": 30, "normal": 24}
    assert record["data"]["sha256"] == read_site_data(site, parent, "pneumonia").sha256
    assert record["notes"] == [f"2 row(s) of {site / 'labels.csv'} name no study in the folder and are left out "
                               "(first: not-here-0.jpeg, not-here-1.jpeg)"]
    assert f"WARNING: {record['notes'][0]}" in result.summary_lines()
    assert record["data"]["bytes"] == sum(f.stat().st_size for f in site.iterdir() if f.suffix == ".jpeg")
    for metrics in (record["before"], record["after"]):
        assert {"sensitivity", "specificity", "accuracy", "auroc", "nll", "ece"} <= set(metrics)
        assert metrics["sensitivity"]["ci95"][0] <= metrics["sensitivity"]["value"] <= metrics["sensitivity"]["ci95"][1]
    assert new.model_version == f"{parent.model_version}+site.{record['data']['sha256'][:8]}"
    assert new.postprocess.temperature == pytest.approx(result.temperature) != 1.0
    assert new.postprocess.thresholds == {"pneumonia": result.threshold}
    assert json.loads((root / "reports" / "calibration.json").read_text())["parent"]["sha256"] == parent_sha
    for a in parent.artifacts:  # every artifact byte-identical
        for rel in a.files.values():
            assert sha256_file(root / rel) == sha256_file(parent_root / rel)
    assert sha256_file(root / "MODEL_CARD.md") == sha256_file(parent_root / "MODEL_CARD.md")
    checks = self_test_bundle(path, trust=[])
    assert checks and all(c.passed for c in checks if not c.skipped)
    assert not (root / "bundle.sig").exists()  # unsigned unless a key is given


def test_engine_applies_the_temperature_and_the_new_threshold(calibrated, pneumonia_bundle, site):
    result, path = calibrated
    study = str(sorted(site.glob("*.jpeg"))[0])
    with open_bundle(pneumonia_bundle, backend="onnxruntime") as parent, open_bundle(path, backend="onnxruntime") as new:
        before, after = parent.predict(study), new.predict(study)
        logits = new.infer(new.task.preprocess(new.task.read(study, new.task.options()), new.task.options())[0][new.task.input_name])
    expected = activate(logits["logits"][0], "softmax", result.temperature)
    assert after.scores["pneumonia"] == pytest.approx(expected[1], abs=1e-6)
    assert after.scores["pneumonia"] != pytest.approx(before.scores["pneumonia"], abs=1e-3)
    assert after.thresholds == {"pneumonia": result.threshold}
    assert ("pneumonia" in after.positive) == (after.scores["pneumonia"] >= result.threshold)
    # the decision on every site study now follows the new threshold on the re-scaled score
    s = activate(np.log(np.maximum(before.scores["pneumonia"], 1e-30)) - np.log(before.scores["normal"]), "sigmoid",
                 result.temperature)
    assert s == pytest.approx(after.scores["pneumonia"], abs=1e-5)


def test_signing_key_signs_the_calibrated_bundle(calibrated, pneumonia_bundle, tmp_path):
    from medexport.engine.signing import check_signature, generate_key_pair

    result, _ = calibrated
    private, public = generate_key_pair(tmp_path / "keys", "site")
    path = write_calibrated(pneumonia_bundle, result, tmp_path / "signed", sign_key=private)
    assert check_signature(path, [public]).trusted


def test_cli_calibrates_without_torch(pneumonia_bundle, site, tmp_path):
    out = tmp_path / "cli-calibrated"
    code = BLOCK.format(mods=["torch", "torchvision", "nncf"]) + (
        "from medexport.export.cli import main\n"
        f"rc = main(['calibrate', {str(pneumonia_bundle)!r}, '--data', {str(site)!r}, '-o', {str(out)!r}, "
        "'--youden', '--backend', 'onnxruntime'])\n"
        "assert not any(k == 'torch' or k.startswith('torch.') for k in sys.modules if sys.modules[k] is not None)\n"
        "sys.exit(rc)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=os.environ | {"MEDEXPORT_TRUST": ""})
    assert proc.returncode == 0, proc.stderr
    assert "temperature 1 ->" in proc.stdout and "UNSIGNED" in proc.stderr
    assert "WARNING: 2 row(s) of" in proc.stdout  # rows without a study are said, not silently dropped
    assert read_manifest(out)[0].provenance["calibration"]["goal"]["kind"] == "youden"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "already exists" in proc.stderr  # never overwritten without --overwrite


def test_viewer_calibrates_and_installs(qtbot, pneumonia_bundle, site, tmp_path, monkeypatch):
    pytest.importorskip("PySide6")
    from medexport.desktop import catalog
    from medexport.desktop.qt_main import MainWindow
    from medexport.desktop.state import AppState

    monkeypatch.setattr(catalog, "open_options", lambda: {"trust": [], "allow_unsigned": True})  # clinic allows unsigned
    window = MainWindow(AppState(bundle_folders=[str(pneumonia_bundle.parent)]))
    qtbot.addWidget(window)
    dialog = window.calibrate_site()
    dialog.folder.setText(str(site))
    dialog.goal.setCurrentIndex(1)  # Youden
    dialog.run()
    qtbot.waitUntil(lambda: dialog.written is not None or dialog.run_button.isEnabled(), timeout=120000)
    assert dialog.written is not None, dialog.output.toPlainText()
    assert "temperature 1 ->" in dialog.output.toPlainText() and "UNSIGNED" in dialog.output.toPlainText()
    installed = dialog.install()
    try:
        assert installed is not None and "+site." in installed.name
        assert read_manifest(installed)[0].provenance["calibration"]["goal"]["kind"] == "youden"
    finally:  # installed into the tests' shared data folder: it must not shadow other tests' pneumonia-cxr
        if installed is not None:
            shutil.rmtree(installed)
