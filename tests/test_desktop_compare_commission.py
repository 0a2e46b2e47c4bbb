"""Model > Compare with... and Help > Commissioning report... in the viewer (issue 30), offscreen with
pytest-qt, on real bundles and real studies: the changed decisions are exactly the studies whose score
lies between the two thresholds; commissioning writes the CLI's report, shows every check, and a bundle
the clinic requires a report for is offered only once it has a passing one."""
import csv
import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("PySide6")

from medexport.desktop.qt_main import MainWindow  # noqa: E402
from medexport.desktop.state import AppState  # noqa: E402

SHOTS = Path("/tmp/medexport-h6-shots")  # screenshots looked at while writing the viewer (not asserted)


def _copy(bundle: Path, dst: Path, version: str = "candidate", **postprocess) -> Path:
    """A copy of ``bundle`` as another version, with ``postprocess`` fields changed (unsigned, as built)."""
    shutil.copytree(bundle, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["model_version"] = f"{manifest['model_version']}-{version}"
    manifest["postprocess"].update(postprocess)
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return dst


def _window(qtbot, folders) -> MainWindow:
    w = MainWindow(AppState(bundle_folders=[str(f) for f in folders]))
    w.scripted = True
    qtbot.addWidget(w)
    w.resize(1300, 850)
    w.show()
    return w


def _shot(widget, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    widget.grab().save(str(SHOTS / name))


def _wait(qtbot, dialog, timeout=180000) -> None:
    qtbot.waitUntil(lambda: dialog.worker is not None and not dialog.worker.isRunning(), timeout=timeout)
    qtbot.wait(100)


def test_compare_lists_exactly_the_studies_between_the_two_thresholds(qtbot, tmp_path, monkeypatch, shared,
                                                                      user_bundle_unvalidated):
    from medexport.engine import open_bundle

    monkeypatch.chdir(tmp_path)
    root = shared / "images" / "kermany-cxr224" / "train"
    films = [str(f) for c in ("NORMAL", "PNEUMONIA") for f in sorted((root / c).glob("*.jpeg"))[:12]]
    with open_bundle(user_bundle_unvalidated) as model:
        scores = {f: model.predict(f).scores["abnormal"] for f in films}
    ranked = sorted(scores.values())
    low, high = ranked[6], ranked[17]  # 11 films from the 7th score up to (not with) the 18th
    current = _copy(user_bundle_unvalidated, tmp_path / "models" / "current", "in-use", thresholds={"abnormal": low})
    candidate = _copy(user_bundle_unvalidated, tmp_path / "candidate", thresholds={"abnormal": high})
    window = _window(qtbot, [tmp_path / "models"])
    window.open_paths(films)
    assert window.state.chosen["image"].path == current
    dialog = window.compare_with(str(candidate))
    dialog.start()
    _wait(qtbot, dialog)
    between = {f for f, s in scores.items() if low <= s < high}
    shown = {dialog.table.item(i, 0).toolTip() for i in range(dialog.table.rowCount())}
    assert len(between) == 11 and shown == between
    for i in range(dialog.table.rowCount()):
        f = dialog.table.item(i, 0).toolTip()
        assert dialog.table.item(i, 1).text() == "POSITIVE: abnormal"
        assert dialog.table.item(i, 2).text() == "below threshold"
        assert f"abnormal {scores[f]:.4f} (threshold {low:.4f})" in dialog.table.item(i, 3).text()
        assert f"abnormal {scores[f]:.4f} (threshold {high:.4f})" in dialog.table.item(i, 4).text()
    summary = dialog.summary.text()
    assert "11 of 24 decisions would change" in summary and "abnormal: Cohen's kappa" in summary
    assert "0 would become positive, 11 negative" in summary
    _shot(dialog, "compare-dialog.png")
    written = dialog.export_csv(str(tmp_path / "changes.csv"))
    with open(written, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["file"] for r in rows} == between and set(rows[0]) >= {"file", "current_scores", "candidate_scores"}
    assert dialog.export_csv(str(tmp_path / "changes.csv")).name == "changes (2).csv"  # never over a file

    dialog.set_candidate(str(current))  # the current bundle itself: refused, saying why
    dialog.start()
    _wait(qtbot, dialog)
    assert dialog.comparison.changes  # the earlier comparison stays shown


def test_compare_volumes_gives_mask_dice_and_volume_differences(qtbot, tmp_path, monkeypatch, hippo_bundle, shared):
    monkeypatch.chdir(tmp_path)
    candidate = _copy(hippo_bundle, tmp_path / "candidate")  # same network, another version: nothing changes
    window = _window(qtbot, [hippo_bundle.parent])
    images = shared / "volumes" / "hippocampus-mr" / "images"
    window.open_paths([str(images / "hippocampus_001.nii.gz"), str(images / "hippocampus_003.nii.gz")])
    dialog = window.compare_with(str(candidate))
    dialog.start()
    _wait(qtbot, dialog)
    c = dialog.comparison
    assert len(c.records) == 2 and not c.errors and dialog.table.rowCount() == 0
    assert c.agreement["mask_dice"] == {"mean": 1.0, "min": 1.0}
    assert c.agreement["measurement_differences"]["total_volume_ml"] == {"mean": 0.0, "max_abs": 0.0}
    assert "masks: Dice between the two mean 1.0" in dialog.summary.text()


@pytest.fixture
def required_reports(tmp_path, monkeypatch):
    """The clinic requires commissioning: viewer.ini's [General] as desktop/trust.py reads it."""
    import medexport.desktop.trust as trust

    folder = tmp_path / "qa"
    values = {"allow_unsigned_bundles": "true", "require_commissioning": "true", "commissioning_reports": str(folder)}
    monkeypatch.setattr(trust, "_general", values.get)
    return folder


def test_commissioning_from_the_help_menu_makes_a_required_bundle_available(qtbot, tmp_path, monkeypatch, shared,
                                                                             hippo_bundle, required_reports):
    from medexport.engine import MedError

    monkeypatch.chdir(tmp_path)
    models = tmp_path / "models"
    good = Path(shutil.copytree(hippo_bundle, models / "hippocampus-mr"))
    tampered = Path(shutil.copytree(hippo_bundle, tmp_path / "elsewhere" / "hippocampus-mr-tampered"))
    onnx = next(tampered.rglob("*.onnx"))
    data = bytearray(onnx.read_bytes())
    data[-100] ^= 0xFF
    onnx.write_bytes(bytes(data))
    window = _window(qtbot, [models, tampered.parent])
    assert window.state.bundles == []  # required and none has a report: not offered, and the problem says why
    assert any("hippocampus-mr" in p and "has no commissioning report" in p for p in window.state.bundle_problems)
    window.state.open([str(shared / "volumes" / "hippocampus-mr" / "images" / "hippocampus_001.nii.gz")])
    with pytest.raises(MedError, match="not offered: hippocampus-mr: bundle hippocampus-mr .* has no commissioning "
                                       "report.*Help > Commissioning report"):
        window.state.run(window.state.study)  # the model is not run, and the viewer says why

    dialog = window.commissioning_report()
    assert dialog.folder.text() == str(required_reports)
    status = {dialog.bundles.item(i, 0).toolTip(): dialog.bundles.item(i, 1).text() for i in range(dialog.bundles.rowCount())}
    assert set(status) == {str(good), str(tampered)}
    assert "checksum" in status[str(tampered)].lower() or "sha-256" in status[str(tampered)].lower()
    assert status[str(good)].startswith("Not offered: bundle hippocampus-mr") and "no commissioning report" in status[str(good)]
    _shot(dialog, "commissioning-before.png")

    dialog.set_ticked([good])  # cancel ends the process; nothing is written
    dialog.start()
    qtbot.wait(1500)
    dialog.worker.cancel()
    _wait(qtbot, dialog, 30000)
    assert dialog.verdict.text().startswith("Cancelled") and not list(required_reports.glob("commissioning-*"))

    dialog.set_ticked([good, tampered])
    dialog.start()
    _wait(qtbot, dialog)
    report = dialog.report
    assert report["verdict"] == "fail" and [b["verdict"] for b in report["bundles"]] == ["pass", "fail"]
    rows = {(dialog.checks.item(i, 0).text(), dialog.checks.item(i, 1).text()): dialog.checks.item(i, 2).text()
            for i in range(dialog.checks.rowCount())}
    assert rows[("hippocampus-mr 1.0.0", "golden replay onnxruntime-fp32")] == "pass"
    tampered_rows = {k: v for k, v in rows.items() if k[0] != "hippocampus-mr 1.0.0"}
    assert tampered_rows and "FAIL" in tampered_rows.values()
    assert "Verdict: FAIL" in dialog.verdict.text()
    assert (required_reports / report["pdf"]["file"]).read_bytes().startswith(b"%PDF")
    assert dialog.written.parent == required_reports and dialog.written.is_file()
    status = {dialog.bundles.item(i, 0).toolTip(): dialog.bundles.item(i, 1).text() for i in range(dialog.bundles.rowCount())}
    assert status[str(good)] == f"commissioned: {dialog.written.name} passed"
    assert "cannot be run" in status[str(tampered)]  # its files do not match its manifest
    _shot(dialog, "commissioning-after.png")
    assert [b.path for b in window.state.bundles] == [good]  # offered now; the tampered copy still not
    assert window.state.run(window.state.study).measurements["total_volume_ml"] > 0


def test_the_frozen_app_shows_each_bundles_standing_and_says_how_to_commission(qtbot, tmp_path, monkeypatch,
                                                                               hippo_bundle, required_reports):
    import sys

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "frozen", True, raising=False)  # the clinic app: no command-line tools inside
    window = _window(qtbot, [hippo_bundle.parent])
    dialog = window.commissioning_report()
    assert not dialog.run.isEnabled()
    assert "Run 'medexport commission BUNDLE... -o" in dialog.verdict.text() and str(required_reports) in dialog.verdict.text()
    assert "no commissioning report" in dialog.bundles.item(0, 1).text()
